"""Per-trial breakdowns the figures draw, apart from drawing them (matplotlib's ``figures``
and bokeh's ``interactive`` render the same numbers): where a trial's time goes, and each
worker's CPU and memory over the timed repeats.

Phases: the data is loaded **once per run** (``bench.runner`` loads the dataset before the
first trial and copies that figure into every record), so it is one bar per dataset, not a
segment of every trial.  Each trial then has start-up (its cluster's, shared by the workloads
run on it), distribution, warm-up (the sum of its untimed warm-up runs) and compute (the
median of its timed repeats).

Timelines: ``resources.workers[i].timeline`` is ``[[t_s, cpu_percent_of_one_core, rss_bytes],
...]`` sampled during the timed repeats (``bench.measure``): ``samples`` were taken, at an
adaptive interval up to ``resources.interval_s``, and a long run's points are merged (mean CPU,
peak RSS), so a timeline may hold fewer points than samples. Older records have no timeline;
they are skipped and said so.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.frameworks import is_baseline
from bench.results import describe, latest_records

from .formatting import MISSING, column_label
from .sections import Section
from .table import Cell, Grid

TRIAL_PHASES = ("startup", "distribute", "warmup", "compute")
PHASE_LABELS = {
    "load": "data load (once per run)",
    "startup": "cluster start-up",
    "distribute": "data distribution",
    "warmup": "warm-up (sum of the warm-up runs)",
    "compute": "compute (median of the timed repeats)",
}


@dataclass
class PhaseBar:
    label: str
    failed: bool
    seconds: dict[str, float] = field(default_factory=dict)
    """Phase -> seconds (absent: not measured)."""
    warmup_runs: int = 0


@dataclass
class PhasePanel:
    workload: str
    bars: list[PhaseBar]


@dataclass
class LoadBar:
    dataset: str
    run_id: str
    seconds: float


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def load_bars(records: Sequence[dict[str, Any]]) -> list[LoadBar]:
    """One bar per (dataset, run) among the latest records: the load is paid once per run."""
    out: dict[tuple[str, str], LoadBar] = {}
    for rec in latest_records(records).values():
        load = _num((rec.get("phases") or {}).get("load"))
        if load is None:
            continue
        name = str((rec.get("dataset") or {}).get("name") or "dataset")
        run = str(rec.get("run_id") or "")
        out.setdefault((name, run), LoadBar(name, run, load))
    return list(out.values())


def phase_panels(records: Sequence[dict[str, Any]]) -> list[PhasePanel]:
    """Per workload, one bar per trial: start-up, distribution, warm-up, compute (no load)."""
    panels: dict[str, PhasePanel] = {}
    for (workload, framework, workers), rec in latest_records(records).items():
        phases = rec.get("phases") or {}
        failed = rec.get("state") != "succeeded"
        bar = PhaseBar(column_label(framework, workers), failed)
        if not failed:
            for phase in ("startup", "distribute"):
                v = _num(phases.get(phase))
                if v is not None:
                    bar.seconds[phase] = v
            warm = [float(s) for s in phases.get("warmup") or [] if _num(s) is not None]
            if warm:
                bar.seconds["warmup"] = sum(warm)
                bar.warmup_runs = len(warm)
            median = describe(phases.get("compute") or rec.get("seconds") or [])["median"]
            if median is None:
                median = _num(rec.get("median"))
            if median is not None:
                bar.seconds["compute"] = median
        panels.setdefault(workload, PhasePanel(workload, [])).bars.append(bar)
    return list(panels.values())


# --------------------------------------------------------------------------------------------
# Per-worker timelines
# --------------------------------------------------------------------------------------------

@dataclass
class WorkerLine:
    id: str
    t: list[float]
    cpu: list[float]
    rss: list[float]
    """Bytes."""
    taken: int = 0
    """Samples the worker's sampler took (``samples``); at least the points drawn."""

    @property
    def points(self) -> int:
        return len(self.t)

    @property
    def samples(self) -> int:
        return max(self.taken, self.points)


@dataclass
class TrialTimeline:
    workload: str
    framework: str
    workers: int
    interval_s: float | None
    lines: list[WorkerLine]

    @property
    def label(self) -> str:
        return f"{self.workload}: {column_label(self.framework, self.workers)}"

    @property
    def samples_text(self) -> str:
        """``"n = 52 samples per worker, interval up to 0.1 s"`` (a range when workers
        differ; the points drawn when merging left fewer)."""
        def span(values: set[int]) -> str:
            counts = sorted(values)
            return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"

        taken = {line.samples for line in self.lines}
        points = {line.points for line in self.lines}
        text = f"n = {span(taken)} samples per worker"
        if points != taken:
            text += f" ({span(points)} points drawn)"
        if self.interval_s:
            text += f", interval up to {self.interval_s:g} s"
        return text


def _lines(resources: dict[str, Any]) -> list[WorkerLine]:
    out = []
    for i, w in enumerate(resources.get("workers") or []):
        rows = [p for p in w.get("timeline") or [] if isinstance(p, (list, tuple)) and len(p) >= 3]
        if not rows:
            continue
        taken = w.get("samples")
        out.append(WorkerLine(str(w.get("id") or i), [float(p[0]) for p in rows],
                              [float(p[1]) for p in rows], [float(p[2]) for p in rows],
                              taken if isinstance(taken, int) else 0))
    return out


def timelines(records: Sequence[dict[str, Any]], select: str = "largest"
              ) -> tuple[list[TrialTimeline], list[str]]:
    """The trials whose workers have timelines, and the labels of succeeded distributed trials
    without any (older records). ``select="largest"``: per workload and framework only the
    largest worker count (to bound the number of figures); ``"all"``: every trial."""
    found: list[TrialTimeline] = []
    missing: list[str] = []
    for (workload, framework, workers), rec in latest_records(records).items():
        if is_baseline(framework) or rec.get("state") != "succeeded":
            continue
        res = rec.get("resources") or {}
        lines = _lines(res)
        if not lines:
            missing.append(f"{workload}: {column_label(framework, workers)}")
            continue
        found.append(TrialTimeline(workload, framework, workers, _num(res.get("interval_s")),
                                   lines))
    if select == "largest":
        best: dict[tuple[str, str], TrialTimeline] = {}
        for t in found:
            key = (t.workload, t.framework)
            if key not in best or t.workers > best[key].workers:
                best[key] = t
        found = list(best.values())
    return found, missing


def skipped_note(missing: Sequence[str]) -> str:
    return ("" if not missing else
            f"No per-worker timeline (records written before timelines were recorded), "
            f"skipped: {', '.join(missing)}.")


def worker_peak_grid(trials: Sequence[TrialTimeline]) -> Grid:
    headers = ["Trial", "Worker", "Samples", "CPU peak (% of one core)", "CPU mean (%)",
               "RSS peak (MiB)"]
    body: list[list[Cell]] = []
    for t in trials:
        for line in t.lines:
            body.append([
                (t.label, None), (line.id, None), (str(line.samples), None),
                (f"{max(line.cpu):.0f}" if line.cpu else MISSING, None),
                (f"{sum(line.cpu) / len(line.cpu):.0f}" if line.cpu else MISSING, None),
                (f"{max(line.rss) / 2**20:.0f}" if line.rss else MISSING, None),
            ])
    return headers, body


def worker_peak_section(records: Sequence[dict[str, Any]], select: str = "all"
                        ) -> Section | None:
    """Per worker of each trial with timelines: its own CPU and RSS peak (not summed)."""
    trials, missing = timelines(records, select)
    if not trials:
        return None
    intro = ("Each worker's own figures over the timed repeats, from its timeline: peak and "
             "mean CPU in percent of one core and peak resident memory, per worker, not summed "
             "or averaged across workers. Samples: how many the worker's sampler took. "
             + skipped_note(missing))
    return Section("Per-worker CPU and memory peaks", intro.strip(),
                   grid=worker_peak_grid(trials), numeric_from=2)
