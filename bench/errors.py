"""Errors the CLI turns into one clear line and an exit status (no traceback without --debug)."""


class TestbedError(Exception):
    """Base class: ``str(err)`` is the whole message shown to the user."""

    exit_code = 1


class UsageError(TestbedError):
    """Bad input from the user: unknown names, invalid values, missing files (exit 2)."""

    exit_code = 2


class RunError(TestbedError):
    """The run itself failed: unreachable cluster, timeout, worker failures (exit 1)."""

    exit_code = 1
