"""What ``testbed report`` and ``testbed compare`` run: read the results files, print the
tables, write the report, judge the comparison (exit status through the raised errors)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.errors import RunError, UsageError
from bench.results import NOISE_FRACTION, read_records

from .console import render_compare, render_faults, render_summary
from .document import report_format, report_text, write_report
from .formatting import fmt_change
from .references import load_references
from .sections import context
from .stats import ReportOptions, compare, regressions, verdict_counts


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file; a missing, unreadable or empty file is a UsageError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"results file {str(path)!r} does not exist")
    if p.is_dir():
        raise UsageError(f"{str(path)!r} is a directory, not a results file")
    try:
        records = [dict(r) for r in read_records(p)]
    except OSError as e:
        raise UsageError(f"cannot read results file {str(path)!r}: {e.strerror or e}") from e
    if not records:
        raise UsageError(f"results file {str(path)!r} has no result records")
    return records


def report_command(results_path: str, out: str | None, fmt: str | None,
                   console: Console | None, options: ReportOptions | None = None,
                   reference: str | None = None) -> int:
    """Print the summary and tables of a results file; with ``out``, also write the report
    there.  With ``fmt`` and no ``out``, print the report itself instead (``testbed report
    r.jsonl --format md > report.md``).  ``options``: noise threshold and prices;
    ``reference``: a file of published numbers to overlay (``references.load_references``)."""
    console = console or Console()
    records = load_results(results_path)
    refs = load_references(reference) if reference else None
    if fmt and not out:
        sys.stdout.write(report_text(records, fmt, options, refs))
        sys.stdout.flush()
        return 0
    target_fmt = report_format(out, fmt) if out else None
    render_summary(context(records, options), console)
    render_faults(records, console)
    if out and target_fmt:
        path = write_report(records, out, target_fmt, options, refs)
        console.print(f"Report written to {path}")
    return 0


def compare_command(path_a: str, path_b: str, console: Console | None,
                    threshold: float = NOISE_FRACTION, fail: bool = True) -> int:
    """Print two results files side by side (A = ``path_a``, B = ``path_b``).  With ``fail``,
    a regression in B (see ``stats.REGRESSIONS``) is a RunError (exit status 1) naming the
    trials."""
    console = console or Console()
    rows = compare(load_results(path_a), load_results(path_b), threshold)
    render_compare(rows, console, title=f"Comparison: A = {path_a}, B = {path_b}")
    console.print(", ".join(f"{n} {v}" for v, n in verdict_counts(rows).items()))
    worse = regressions(rows)
    if fail and worse:
        names = ", ".join(
            f"{r['workload']}/{r['framework']}x{r['workers']} "
            + (fmt_change(r["change"]) if r["verdict"] == "slower" else "failed")
            for r in worse[:5]) + (", ..." if len(worse) > 5 else "")
        raise RunError(f"{len(worse)} of {len(rows)} trials regressed in B ({names}): slower "
                       f"beyond noise (both IQRs and {threshold * 100:g}%) or failed only in B; "
                       f"--no-fail to only compare")
    return 0
