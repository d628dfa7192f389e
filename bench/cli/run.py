"""``testbed run``: a benchmark on local Ray/Dask clusters, with progress, the tables and an
optional report."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bench.errors import RunError

if TYPE_CHECKING:
    from bench.record import ResultRecord

from .options import Parser, console
from .spec_args import add_spec_flags, check_fits_machine, spec_from_args


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    run = sub.add_parser("run", parents=[common],
                         help="run a benchmark on local Ray/Dask clusters")
    add_spec_flags(run)
    run.add_argument("--out", "-o", help="results file (JSON Lines, appended); default "
                                         "results/<name>-<run id>.jsonl")
    run.add_argument("--report", help="also write a report (.html or .md)")
    run.add_argument("--artifacts", action="store_true",
                     help="also save each trial's Dask performance report and Ray timeline in "
                          "<results>-artifacts/ (the spec's 'artifacts: true'), and start "
                          "Ray's dashboard")
    run.set_defaults(fn=cmd_run)


def _remove_leftovers() -> None:
    from bench.lifecycle import remove_leftovers

    for left in remove_leftovers():
        print(f"testbed: removed {len(left.processes)} process(es) left by an earlier testbed run "
              f"(pid {left.owner_pid}, gone): {', '.join(left.processes[:6])}"
              f"{' ...' if len(left.processes) > 6 else ''}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from bench.report import render_table, write_report
    from bench.report.stats import trial_flags
    from bench.results import summarize
    from bench.runner import new_run_id, run_benchmark

    spec = spec_from_args(args)
    if args.artifacts:
        spec.artifacts = True
    check_fits_machine(spec, args.spec)
    out_console = console()
    _remove_leftovers()
    run_id = new_run_id()
    out = args.out or os.path.join("results", f"{spec.name}-{run_id}.jsonl")
    trials = spec.trials()
    total = len(trials) * len(spec.workloads)
    out_console.print(f"[bold]testbed run[/] {spec.name}: {len(spec.workloads)} workload(s) × "
                      f"{len(trials)} framework/worker combination(s) = {total} trials, "
                      f"dataset {spec.dataset.name}, {spec.repeats} repeats; results → {out}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out_console, transient=True,
                  disable=not out_console.is_terminal) as progress:
        task = progress.add_task("starting", total=total)

        def on_record(rec: ResultRecord) -> None:
            progress.advance(task)
            out_console.print(trial_line(rec))

        def on_status(msg: str) -> None:
            progress.update(task, description=msg)
            if not out_console.is_terminal:  # logs and pipes get each step as a line of its own
                print(f"testbed: {msg}", file=sys.stderr, flush=True)

        def on_info(msg: str) -> None:
            out_console.print(f"  [dim]{msg}[/]")

        result = run_benchmark(spec, out, run_id=run_id, on_record=on_record,
                               on_status=on_status, on_info=on_info)
    out_console.print()
    rows = summarize(result.records)
    render_table(rows, console=out_console, flags=trial_flags(result.records))
    if args.report:
        path = write_report(result.records, args.report,
                            "md" if args.report.endswith((".md", ".markdown")) else "html")
        out_console.print(f"report written to {path}")
    out_console.print(f"results: {out}  (testbed report {out} --out report.html)")
    if spec.artifacts:
        out_console.print(f"artifacts: {os.path.splitext(out)[0]}-artifacts/ (Dask performance "
                          "reports, Ray timelines for chrome://tracing or ui.perfetto.dev)")
    if result.failed:
        names = ", ".join(f"{r['workload']}/{r['framework']}x{r['workers']}"
                          for r in result.failed[:5])
        raise RunError(f"{len(result.failed)} of {len(result.records)} trials failed ({names}); "
                       f"see 'error' in {out}")
    return 0


def _fault_text(f: dict[str, Any]) -> str:
    """The fault-injection part of a trial line ("" when the trial was not faulted)."""
    obs = f.get("observed") or {}
    how = (f"finished, {f.get('penalty_seconds') or 0:+.2f}s" if f.get("finished") else
           f"FAILED ({(f.get('error') or '').split(':')[0]})")
    det = obs.get("detected_after_seconds")
    text = (f"  fault: {len(f.get('killed') or [])} killed, {how}"
            + (f", detected after {det:.2f}s" if det is not None else ""))
    for key, what in (("node_dead_after_seconds", "node dead"),
                      ("replaced_after_seconds", "replaced")):
        if obs.get(key) is not None:
            text += f", {what} after {obs[key]:.2f}s"
    return text


def trial_line(rec: Mapping[str, Any]) -> str:
    """One line per finished trial (rich markup): median, quality, start-up, faults."""
    who = f"{rec['workload']:<10} {rec['framework']:>11} ×{rec['workers']:<2}"
    if rec["state"] != "succeeded":
        return f"  [red]✗[/] {who} FAILED: {rec['error']}"
    q = rec["quality"].get(rec["quality_metric"])
    qs = f"{rec['quality_metric']}={q:.4g}" if isinstance(q, (int, float)) else ""
    ph = rec["phases"]
    fault = ""
    if rec.get("faults") and rec["faults"].get("applicable"):
        fault = _fault_text(rec["faults"])
    return (f"  [green]✓[/] {who} median {rec['median']:.4f}s (IQR {rec['iqr']:.4f})  {qs}  "
            f"start {ph['startup'] or 0:.1f}s  distribute {ph['distribute'] or 0:.3f}s{fault}")
