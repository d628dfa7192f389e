"""``testbed``: run benchmarks, report and compare results, and the in-pod runner.

Exit status: 0 success, 1 a run failure (some trial failed, unreachable cluster, timeout),
2 a usage error (bad spec or flag, missing file).  No traceback unless ``--debug``.

One module per command group: ``run``, ``report`` (report and compare), ``runner`` (the
in-pod entry point); ``options`` and ``spec_args`` hold what they share.  This module
assembles the parser and runs a command.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from bench.errors import TestbedError

from . import data, report, run, runner
from .options import Parser, VersionAction, version_line

if TYPE_CHECKING:
    from bench.lifecycle import Interrupted

__all__ = ["build_parser", "main", "version_line"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="testbed", description="Benchmark Ray against Dask on ML workloads.")
    p.add_argument("--version", action=VersionAction,
                   help="print the testbed's version (and Ray's and Dask's) and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    # --debug after the subcommand too; SUPPRESS keeps a subcommand from resetting it to False.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    run.register(sub, common)
    report.register(sub, common)
    runner.register(sub, common)
    data.register(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from bench.lifecycle import Interrupted, SignalGuard

    with SignalGuard():
        try:
            code = _main(argv)
        except Interrupted as e:
            _exit_interrupted(e)
    from bench.runner import ABANDONED

    if any(t.is_alive() for t in ABANDONED):
        # A timed-out trial's thread is still busy; everything is on disk, so leave now
        # instead of waiting for it at interpreter shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _exit_interrupted(e: Interrupted) -> NoReturn:
    """SIGINT/SIGTERM/SIGHUP: the engines stopped their clusters on the way out; kill whatever
    of ours is left (a second signal kills at once), then exit with 128 + the signal."""
    import time

    from bench.lifecycle import cleanup_after_interrupt

    t0 = time.monotonic()
    print(f"testbed: {e.name}: stopping what this run started (again to kill at once)",
          file=sys.stderr, flush=True)
    left = cleanup_after_interrupt()
    print(f"testbed: interrupted by {e.name}; stopped in {time.monotonic() - t0:.1f}s"
          + (f" ({left} leftover process(es) killed)" if left else "")
          + "; results measured so far are on disk", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Threads of an interrupted trial, Ray's and Dask's clients: none of them may hold the exit.
    os._exit(e.exit_code)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("TESTBED_DEBUG"))
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.fn
    try:
        return command(args)
    except TestbedError as e:
        if debug:
            raise
        print(f"testbed: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted; results measured so far are on disk", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure: one line, the traceback behind --debug
        if debug:
            raise
        print(f"testbed: error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
