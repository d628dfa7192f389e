"""The argument parser's parts shared by every command: the parser class (short errors with a
suggestion), ``--version``, value types for flags, and the console the commands print to."""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from bench.errors import did_you_mean

if TYPE_CHECKING:
    from rich.console import Console


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 with usage; keep it, shorter
        # "invalid choice: 'rnu' (choose from 'run', ...)": add the closest choice.
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:
            message += did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        self.print_usage(sys.stderr)
        self.exit(2, f"testbed: error: {message}\n")


class VersionAction(argparse.Action):
    """``--version``: the testbed's version and the frameworks' (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(version_line())
        parser.exit(0)


def version_line() -> str:
    """``testbed 0.1.0 (ray 2.60.0, dask 2026.8.0)`` from the installed distributions."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"testbed {v('raydask-testbed')} (ray {v('ray')}, dask {v('dask')})"


def csv_list(kind: str) -> Callable[[str], list[str]]:
    """A flag type: a comma-separated list of names (``kind`` names the flag in errors)."""
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(
                f"{kind}: expected a comma-separated list, got {text!r}")
        return items
    return parse


def int_list(text: str) -> list[int]:
    """A flag type: positive integers, comma-separated (worker counts)."""
    out = []
    for item in text.split(","):
        t = item.strip()
        try:
            v = int(t)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected positive integers like 1,2,4; got {t!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"worker counts must be positive; got {v}")
        out.append(v)
    return out


def int_at_least(low: int) -> Callable[[str], int]:
    """A flag type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}, got {v}" if low else f"must be 0 or more, got {v}")
        return v
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def threshold(text: str) -> float:
    """A flag type: the noise threshold of ``testbed compare``, a fraction such as 0.05."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.05 (5%), got {text!r}") \
            from None
    if not 0 <= v < 100:
        raise argparse.ArgumentTypeError(f"expected a fraction of 0 or more like 0.05 (5%), "
                                         f"got {v:g}")
    return v


def console() -> Console:
    """A rich console; when output is not a terminal (CI logs, pipes) use a wide fixed width."""
    import shutil

    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:
        c = Console(highlight=False, width=max(140, shutil.get_terminal_size((140, 40)).columns))
    return c
