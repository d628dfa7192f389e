"""What a report says, whatever its format: title, summary line, and its parts in order
(:data:`SECTION_BUILDERS`): the summary (sentences and the run-time table), how to read it,
the figures, the detail tables, and the environment last; and the captions of its figures."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from bench.results import latest_records, summarize

from . import operations, summary
from .cost import TrialCost, costs
from .formatting import FLAG
from .stats import ReportOptions, trial_flags
from .table import (
    Flags,
    Grid,
    Key,
    cost_grid,
    environment_grid,
    fault_grid,
    quality_grid,
    runtime_grid,
    scaling_grid,
)

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
    """One part of the report. Every field but ``heading`` is optional; an output renders, in
    this order, ``intro``, ``sentences`` (a bullet list), ``grid`` (a table whose columns from
    ``numeric_from`` on hold numbers), the figures (when ``figures``), then ``html`` (HTML
    output only, e.g. an interactive chart) or ``markdown`` (Markdown output only).
    ``folded``: in HTML, inside a closed ``<details>``; ``wrap``: long cells wrap (no
    horizontal scrolling)."""

    heading: str
    intro: str = ""
    grid: Grid | None = None
    numeric_from: int = 1
    sentences: tuple[str, ...] = ()
    figures: bool = False
    folded: bool = False
    wrap: bool = False
    html: str | None = None
    markdown: str | None = None


class Context(NamedTuple):
    """What a section builder gets: the records (plain dicts), their ``summarize`` rows, the
    user's options, and the noise flags and costs worked out once for every section."""

    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    options: ReportOptions
    flags: Flags
    costs: dict[Key, TrialCost]


Builder = Callable[[Context], Iterable[Section]]
"""A section builder: the sections it adds (none when it has nothing to say)."""


def context(records: list[dict[str, Any]], options: ReportOptions | None = None) -> Context:
    options = options or ReportOptions()
    return Context(records, summarize(records), options,
                   trial_flags(records, options.noise_threshold), costs(records, options))


def title(records: Sequence[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(str(r.get("benchmark")) for r in records if r.get("benchmark")))
    return "Ray vs Dask benchmark" + (f": {', '.join(names)}" if names else "")


def load_summary(records: list[dict[str, Any]]) -> str:
    """``"12 trials (11 succeeded, 1 failed), from 14 records"``."""
    latest = latest_records(records)
    failed = sum(1 for r in latest.values() if r.get("state") != "succeeded")
    text = f"{len(latest)} trials ({len(latest) - failed} succeeded, {failed} failed)"
    return text + f", from {len(records)} records"


RUNTIME_INTRO = ("Median compute seconds of the timed repeats ± interquartile range. "
                 "FAILED: the trial did not complete; —: not run; " + FLAG + ": flagged as "
                 "less reliable (see Scaling's Flags column).")


def summary_section(ctx: Context) -> Iterable[Section]:
    """The summary in sentences, then the run-time table."""
    yield Section("Summary", summary.NOISE_RULE, sentences=tuple(
        summary.sentences(ctx.rows, ctx.records, ctx.flags, ctx.costs, ctx.options)))
    yield Section("Run time performance", RUNTIME_INTRO, runtime_grid(ctx.rows, ctx.flags), 1)


def how_to_read_section(ctx: Context) -> Iterable[Section]:
    yield Section("How to read this report", HOW_TO_READ, folded=True)


def figures_section(ctx: Context) -> Iterable[Section]:
    yield Section("Figures", figures=True)


def scaling_section(ctx: Context) -> Iterable[Section]:
    yield Section("Scaling", "Speedup and efficiency relative to the same framework's smallest "
                  "worker count; “vs local” is the local baseline's median divided by the "
                  "trial's median (above 1: faster than the baseline). Flags: the IQR is more "
                  f"than {ctx.options.noise_threshold:g} of the median (--noise-threshold), "
                  "or the machine was busy while the trial ran.",
                  scaling_grid(ctx.rows, ctx.flags), 2)


def quality_section(ctx: Context) -> Iterable[Section]:
    q = quality_grid(ctx.rows)
    if q[1]:
        yield Section(
            "Quality vs the local baseline",
            "The workload's headline quality figure for each distributed trial next to the "
            "single-process baseline (most threads), the difference in percent of the baseline, "
            "and the workload's own tolerance (within the larger of its absolute and relative "
            "bound). Only a figure outside its tolerance is marked NO: it points at a "
            "partitioning problem.", q, 3)


def cost_section(ctx: Context) -> Iterable[Section]:
    if not ctx.costs:
        return
    intro = ("What one run of the workload held and used: median compute seconds (the timed "
             "phase only; start-up, load and distribution not included). Cores held = workers "
             "× CPUs per worker (local baseline: its threads); core-s held = cores held × "
             "median s; core-s used = the workers' measured mean CPU (summed over their "
             "processes, 100 % = one core) × median s, — with too few samples; peak memory = "
             "peak memory summed over the workers, in GB (10⁹ bytes): each worker pod's "
             "working set where the workers ran in the operator's pods, else each worker's "
             "peak resident memory; GB-s = peak memory × median s.")
    label = summary.money_label(ctx.options)
    if label:
        intro += " Cost = core-hours held × the core price + GB-hours × the memory price."
    yield Section("Cost per run", intro, cost_grid(ctx.costs, label), 2)


def faults_section(ctx: Context) -> Iterable[Section]:
    faults = fault_grid(ctx.records)
    if faults is not None:
        yield Section(
            "Fault tolerance",
            "One extra run per trial during which workers (or the head) were killed. Penalty: "
            "that run minus the fault-free median. Detected after: from the kill to the "
            "framework's first record of the failure (Ray: a task attempt failing; Dask: the "
            "scheduler removing the worker); then: Ray's GCS marking the node dead, or the Dask "
            "nanny's replacement worker arriving. Retried / recomputed: Ray task attempts above "
            "the first; Dask tasks that ran more than once.", faults, 4)


def operations_section(ctx: Context) -> Iterable[Section]:
    """Staged etl runs' seconds per operation, and what each worker read (operations.py)."""
    stages = operations.stage_grid(ctx.records)
    if stages is not None:
        yield Section("Per operation: Ray Data vs Dask DataFrame", operations.STAGES_INTRO,
                      stages, 2)
    data = operations.data_grid(ctx.records)
    if data is not None:
        yield Section("Data read per worker", operations.DATA_INTRO, data[0], 3,
                      sentences=tuple(data[1]), wrap=True)


def environment_section(ctx: Context) -> Iterable[Section]:
    yield Section("Environment", "Where and with what the results were measured (distinct "
                  "values across trials; lists one item per line).",
                  environment_grid(ctx.records), 99, folded=True, wrap=True)


SECTION_BUILDERS: list[tuple[str, Builder]] = [
    ("summary", summary_section),
    ("how-to-read", how_to_read_section),
    ("figures", figures_section),
    ("scaling", scaling_section),
    ("quality", quality_section),
    ("cost", cost_section),
    ("faults", faults_section),
    ("operations", operations_section),
    ("environment", environment_section),
]
"""The report's parts in order, by name. To add one, write ``def my_section(ctx: Context) ->
Iterable[Section]`` and insert ``("my-name", my_section)`` where it belongs (e.g. before
``"environment"``, which stays last)."""


def sections(records: list[dict[str, Any]], options: ReportOptions | None = None,
             extra: Sequence[Section] = ()) -> list[Section]:
    """Every part of the report, in the order of ``SECTION_BUILDERS``; ``extra`` (the
    model-backed parts of ``extras.Extras``, which import this module) just before the
    environment, which stays last."""
    ctx = context(records, options)
    out: list[Section] = []
    for name, build in SECTION_BUILDERS:
        if name == "environment":
            out += extra
        out += build(ctx)
    return out
