"""Errors the CLI turns into one clear line and an exit status (no traceback without --debug)."""
from __future__ import annotations

from collections.abc import Iterable


class TestbedError(Exception):
    """Base class: ``str(err)`` is the whole message shown to the user."""

    exit_code = 1


class UsageError(TestbedError):
    """Bad input from the user: unknown names, invalid values, missing files (exit 2)."""

    exit_code = 2


class RunError(TestbedError):
    """The run itself failed: unreachable cluster, timeout, worker failures (exit 1)."""

    exit_code = 1


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``word``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def error_summary(e: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of ``e``, and of its cause when it has one (``ray.init``'s
    ``ConnectionError`` hides why in its cause), each cut at ``limit`` characters."""
    msg = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    first = msg[0] if msg else ""
    if first.endswith(":") and len(msg) > 1:
        # "Training failed due to worker errors:" (Ray Train's WorkerGroupError) says why on
        # the lines below: keep the first of them.
        first = f"{first} {msg[1]}"
    out = f"{type(e).__name__}: {first}"[:limit]
    cause = e.__cause__
    if cause is not None:
        lines = str(cause).strip().splitlines()
        out += f" ({type(cause).__name__}: {lines[0] if lines else ''})"[:limit]
    return out
