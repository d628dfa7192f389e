"""What a report says, whatever its format: title, summary line, how to read it, its tables
(heading, grid, intro) and the captions of its figures."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from bench.results import latest_records, summarize

from .table import Grid, environment_grid, fault_grid, quality_grid, runtime_grid, scaling_grid

HOW_TO_READ = (
    "Each trial runs one workload on one framework with a given number of worker processes "
    "(for the single-process local baseline: threads). Only the compute phase is timed "
    "repeatedly, after warm-up runs; tables show the median of those repeats and their "
    "interquartile range (± IQR), which is the run-to-run noise. Speedup compares a framework "
    "with itself at its smallest worker count; efficiency is speedup divided by the increase "
    "in workers (1.00 = perfect linear scaling). \"vs local\" divides the local baseline's "
    "median by the trial's median, so values above 1 mean the distributed run beat plain "
    "single-process code. Start-up, load and distribution are paid once per trial and are "
    "reported separately. A difference between two cells is only meaningful when it is "
    "larger than both cells' IQR and more than 5 %."
)


# Figure file name (see figures.make_figures) -> (title, caption).
FIGURES = {
    "time_vs_workers": (
        "Compute time vs workers",
        ("Median compute time of the timed repeats (bars: interquartile range) per framework "
         "and worker count. Dashed/dotted horizontal lines are the single-process local "
         "baselines with 1 thread and with every core."),
    ),
    "speedup_efficiency": (
        "Speedup and parallel efficiency",
        ("Speedup = median at the smallest worker count / median at n workers; efficiency = "
         "speedup / (n / smallest count). The dashed black line is ideal linear scaling."),
    ),
    "scaling_model": (
        "Scaling model (Amdahl and USL, extrapolated)",
        ("A model, not a measurement: measured median speedups (points) with Amdahl's law and "
         "the Universal Scalability Law fitted to them and extrapolated to 64 workers; shaded: "
         "the 5th–95th percentile of a bootstrap over the timed repeats (run-to-run noise only, "
         "not model error)."),
    ),
    "phases": (
        "Where the time goes",
        ("Top: the data load, paid once per run (not per trial). Below, per trial: cluster "
         "start-up (shared by the workloads run on that cluster), data distribution, warm-up "
         "(the sum of the untimed warm-up runs) and compute (the median of the timed repeats), "
         "stacked."),
    ),
    "resources": (
        "CPU and memory",
        ("CPU: the sum over the workers of each worker's mean CPU (100 % = one core busy). "
         "Memory: the maximum over the workers of each worker's peak resident memory (not a "
         "sum). Per framework and worker count; per-worker figures are in the timelines."),
    ),
    "worker_timelines": (
        "Per-worker CPU and memory over time",
        ("One line per worker (not a sum or a mean): its CPU in percent of one core and its "
         "resident memory, sampled during the timed repeats; n = samples per worker (a long "
         "run's points are merged: mean CPU, peak memory). For the largest worker count of "
         "each workload and framework."),
    ),
    "faults": (
        "Fault tolerance",
        ("Per faulted trial: the fault-free median (grey) and the run during which workers "
         "were killed (coloured if it finished, red hatching if it failed), the red line "
         "marking the kill; the label gives the penalty, the framework's detection time and "
         "its retries."),
    ),
}


class Section(NamedTuple):
    """One table of the report; columns from ``numeric_from`` on hold numbers."""

    heading: str
    grid: Grid
    numeric_from: int
    intro: str


def title(records: Sequence[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(str(r.get("benchmark")) for r in records if r.get("benchmark")))
    return "Ray vs Dask benchmark" + (f": {', '.join(names)}" if names else "")


def load_summary(records: list[dict[str, Any]]) -> str:
    """``"12 trials (11 succeeded, 1 failed), from 14 records"``."""
    latest = latest_records(records)
    failed = sum(1 for r in latest.values() if r.get("state") != "succeeded")
    text = f"{len(latest)} trials ({len(latest) - failed} succeeded, {failed} failed)"
    return text + f", from {len(records)} records"


def sections(records: list[dict[str, Any]]) -> list[Section]:
    """Every table of the report, in order."""
    rows = summarize(records)
    out = [
        Section("Environment", environment_grid(records), 99,
                "Where and with what the results were measured (distinct values across trials)."),
        Section("Run time performance", runtime_grid(rows), 1,
                "Median compute seconds of the timed repeats ± interquartile range. "
                "FAILED: the trial did not complete; —: not run."),
        Section("Scaling", scaling_grid(rows), 2,
                "Speedup and efficiency relative to the same framework's smallest worker count; "
                "“vs local” is the local baseline's median divided by the trial's median "
                "(above 1: faster than the baseline)."),
    ]
    q = quality_grid(rows)
    if q[1]:
        out.append(Section(
            "Quality vs the local baseline", q, 3,
            "The workload's headline quality figure for each distributed trial next to the "
            "single-process baseline (most threads). A distributed run should match it; a "
            "large Δ points at a partitioning problem."))
    faults = fault_grid(records)
    if faults is not None:
        out.append(Section(
            "Fault tolerance", faults, 4,
            "One extra run per trial during which workers (or the head) were killed. Penalty: "
            "that run minus the fault-free median. Detected after: from the kill to the "
            "framework's first record of the failure (Ray: a task attempt failing; Dask: the "
            "scheduler removing the worker); then: Ray's GCS marking the node dead, or the Dask "
            "nanny's replacement worker arriving. Retried / recomputed: Ray task attempts above "
            "the first; Dask tasks that ran more than once."))
    return out
