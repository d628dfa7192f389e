"""The report's figures (PNG), drawn with matplotlib.

The only module of the report that uses matplotlib, and it imports it only when a figure is
drawn: printing tables (``testbed report`` without ``--out``) and ``testbed compare`` never load
it.  Each figure's title and caption are in ``sections.FIGURES``, under its file name.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.frameworks import BASELINE, is_baseline
from bench.results import describe, latest_records, summarize

from .figures_detail import phases_figure, scaling_model_figure, worker_timelines_figure
from .formatting import MISSING, column_label, fmt_seconds, fmt_signed_seconds, shorten
from .scaling import Sweep, sweeps
from .stats import faulted
from .table import observed, workloads

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

    from .references import References

FRAMEWORK_COLORS = {
    BASELINE: "#555555",
    "ray": "#1f77b4",
    "dask": "#ff7f0e",
    "dask-on-ray": "#2ca02c",
}
_EXTRA_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FRAMEWORK_MARKERS = {BASELINE: "s", "ray": "o", "dask": "^", "dask-on-ray": "D"}
_MARKERS: dict[str, str] = {str(k): v for k, v in FRAMEWORK_MARKERS.items()}
_COLORS: dict[str, str] = {str(k): v for k, v in FRAMEWORK_COLORS.items()}

def _framework_color(framework: str, seen: dict[str, str]) -> str:
    if framework in FRAMEWORK_COLORS:
        return FRAMEWORK_COLORS[framework]
    if framework not in seen:
        seen[framework] = _EXTRA_COLORS[len(seen) % len(_EXTRA_COLORS)]
    return seen[framework]


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def _plain_ticks(axis: Axis) -> None:
    """Tick labels as plain numbers (``8``, not ``2^3``), no minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _set_worker_axis(ax: Axes, workers: Sequence[int]) -> None:
    ticks = sorted(set(workers))
    if not ticks:
        return
    if ticks[-1] / ticks[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    _plain_ticks(ax.xaxis)
    pad = 0.15 if ax.get_xscale() == "log" else 0.3
    if ax.get_xscale() == "log":
        ax.set_xlim(ticks[0] / 2**pad, ticks[-1] * 2**pad)
    else:
        span = max(1, ticks[-1] - ticks[0])
        ax.set_xlim(ticks[0] - pad * span / 2 - 0.2, ticks[-1] + pad * span / 2 + 0.2)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


# --------------------------------------------------------------------------------------------
# Compute time vs workers
# --------------------------------------------------------------------------------------------

def _plot_frameworks(ax: Axes, workload: str, wrows: list[dict[str, Any]],
                     latest: dict[tuple[str, str, int], dict[str, Any]],
                     colors: dict[str, str]) -> tuple[list[float], list[int], list[str]]:
    """Median ± IQR per distributed framework; returns (medians, worker counts, failed)."""
    values: list[float] = []
    all_workers: list[int] = []
    failed: list[str] = []
    frameworks = dict.fromkeys(r["framework"] for r in wrows if not is_baseline(r["framework"]))
    for framework in frameworks:
        pts = [r for r in wrows if r["framework"] == framework]
        all_workers += [r["workers"] for r in pts]
        ok = [r for r in pts if r["state"] == "succeeded" and r["median"] is not None]
        failed += [column_label(framework, r["workers"]) for r in pts if r not in ok]
        if not ok:
            continue
        xs = [r["workers"] for r in ok]
        ys = [r["median"] for r in ok]
        lo, hi = [], []
        for r in ok:
            s = describe(latest[(workload, framework, r["workers"])].get("seconds") or [])
            lo.append(max(0.0, r["median"] - (s["q25"] if s["n"] else r["median"])))
            hi.append(max(0.0, (s["q75"] if s["n"] else r["median"]) - r["median"]))
        values += ys
        ax.errorbar(xs, ys, yerr=[lo, hi], label=framework, capsize=3, linewidth=1.8,
                    marker=FRAMEWORK_MARKERS.get(framework, "o"), markersize=6,
                    color=_framework_color(framework, colors))
    return values, all_workers, failed


def _plot_local_baselines(ax: Axes, wrows: list[dict[str, Any]]) -> tuple[list[float], list[str]]:
    """Horizontal lines for the local baselines (fewest and most threads); returns (medians,
    failed)."""
    values: list[float] = []
    local = {r["workers"]: r for r in wrows if is_baseline(r["framework"])}
    local_ok = {w: r for w, r in local.items() if r["state"] == "succeeded"}
    if local_ok:
        styles = [(min(local_ok), "--")]
        if max(local_ok) != min(local_ok):
            styles.append((max(local_ok), ":"))
        for threads, style in styles:
            m = local_ok[threads]["median"]
            values.append(m)
            label = "local 1 thread" if threads == 1 else f"local {threads} threads"
            ax.axhline(m, linestyle=style, color=FRAMEWORK_COLORS[BASELINE], linewidth=1.6,
                       label=f"{label} ({fmt_seconds(m)} s)")
    return values, [column_label(BASELINE, w) for w in local if w not in local_ok]


def _plot_references(ax: Axes, refs: References | None, workload: str,
                     colors: dict[str, str]) -> tuple[list[float], list[int]]:
    """The published numbers as their own dashed series; returns (seconds, worker counts)."""
    values: list[float] = []
    workers: list[int] = []
    for framework, pts in (refs.series(workload).items() if refs else []):
        xs, ys = [w for w, _ in pts], [v for _, v in pts]
        ax.plot(xs, ys, linestyle="--", marker=_MARKERS.get(framework, "o"),
                mfc="none", markersize=7, linewidth=1.2,
                color=_framework_color(framework, colors),
                label=f"{framework}: {refs.label if refs else ''} (different setup)")
        values += ys
        workers += xs
    return values, workers


def _time_vs_workers(records: list[dict[str, Any]], rows: list[dict[str, Any]],
                     refs: References | None = None) -> Figure | None:
    latest = latest_records(records)
    if not any(r["state"] == "succeeded" for r in rows):
        return None
    names = workloads(rows)
    nrows, ncols = _grid_shape(len(names))
    fig = _new_figure(max(7.5, 5.4 * ncols), 4.2 * nrows)  # (room for the title)
    extra_colors: dict[str, str] = {}
    for i, workload in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        wrows = [r for r in rows if r["workload"] == workload]
        values, all_workers, failed = _plot_frameworks(ax, workload, wrows, latest, extra_colors)
        local_values, local_failed = _plot_local_baselines(ax, wrows)
        ref_values, ref_workers = _plot_references(ax, refs, workload, extra_colors)
        values += local_values + ref_values
        all_workers += ref_workers
        failed += local_failed
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0, top=max(values) * 1.15 if values else 1)
        _set_worker_axis(ax, all_workers or [1])
        ax.set_title(workload, fontsize=12, fontweight="bold")
        ax.set_xlabel("workers (processes)")
        ax.set_ylabel("median compute time (s)")
        ax.grid(True, which="major", alpha=0.3)
        if failed:
            ax.text(0.02, 0.02, "failed: " + ", ".join(failed), transform=ax.transAxes,
                    color="#b00000", fontsize=8, va="bottom")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.suptitle("Compute time vs workers (median; error bars = interquartile range)",
                 fontsize=13)
    return fig


# --------------------------------------------------------------------------------------------
# Speedup and efficiency
# --------------------------------------------------------------------------------------------

def _speedup_efficiency(rows: list[dict[str, Any]]) -> Figure | None:
    if not any(r.get("speedup") is not None for r in rows):
        return None
    names = workloads(rows)
    fig = _new_figure(11, 3.8 * len(names))
    extra_colors: dict[str, str] = {}
    for i, workload in enumerate(names):
        ax_s = fig.add_subplot(len(names), 2, 2 * i + 1)
        ax_e = fig.add_subplot(len(names), 2, 2 * i + 2)
        wrows = [r for r in rows if r["workload"] == workload]
        workers_all = [r["workers"] for r in wrows]
        max_s = 1.0
        bases = []
        for framework in dict.fromkeys(r["framework"] for r in wrows):
            pts = [r for r in wrows if r["framework"] == framework and r["speedup"] is not None]
            if not pts:
                continue
            bases.append(min(r["workers"] for r in wrows if r["framework"] == framework))
            label = f"{framework} (threads)" if is_baseline(framework) else framework
            style: dict[str, Any] = {
                "marker": FRAMEWORK_MARKERS.get(framework, "o"), "linewidth": 1.8,
                "color": _framework_color(framework, extra_colors), "label": label,
                "linestyle": "-." if is_baseline(framework) else "-"}
            xs = [r["workers"] for r in pts]
            ax_s.plot(xs, [r["speedup"] for r in pts], **style)
            ax_e.plot(xs, [r["efficiency"] for r in pts], **style)
            max_s = max(max_s, *(r["speedup"] for r in pts))
        ticks = sorted(set(workers_all))
        base = min(bases) if bases else 1
        ideal_x = [w for w in ticks if w >= base]
        ax_s.plot(ideal_x, [w / base for w in ideal_x], "k--", linewidth=1, label="ideal (linear)")
        ax_e.axhline(1.0, color="k", linestyle="--", linewidth=1, label="ideal")
        max_e = max([1.0] + [r["efficiency"] for r in wrows if r.get("efficiency") is not None])
        top = max(max_s, ideal_x[-1] / base if ideal_x else 1)
        ax_e.set_ylim(0, max_e * 1.15)
        for ax, what in ((ax_s, "speedup (×)"), (ax_e, "efficiency (speedup / workers)")):
            _set_worker_axis(ax, ticks)
            ax.set_xlabel("workers (processes; local: threads)")
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
        if ax_s.get_xscale() == "log":
            # Log-log: ideal scaling is a straight diagonal.
            ax_s.set_yscale("log", base=2)
            ax_s.set_ylim(0.8, top * 1.25)
            _plain_ticks(ax_s.yaxis)
        else:
            ax_s.set_ylim(0, top * 1.1)
        ax_s.set_title(f"{workload}: speedup", fontsize=12, fontweight="bold")
        ax_e.set_title(f"{workload}: parallel efficiency", fontsize=12, fontweight="bold")
    fig.suptitle("Scaling relative to each framework's smallest worker count", fontsize=13)
    return fig


# --------------------------------------------------------------------------------------------
# Bar charts: phases, resources, faults
# --------------------------------------------------------------------------------------------

def _bar_heights(names: list[str], rows: list[dict[str, Any]]) -> list[float]:
    """Height in inches of each workload's horizontal bar chart (one bar per trial)."""
    return [max(2.0, 0.42 * sum(1 for r in rows if r["workload"] == w) + 1.2) for w in names]


def _bar_grid(names: list[str], rows: list[dict[str, Any]], width: float, pad: float,
              ncols: int) -> tuple[Figure, GridSpec]:
    """A figure with one row of horizontal bar charts per workload, each as tall as its
    trials need."""
    heights = _bar_heights(names, rows)
    fig = _new_figure(width, sum(heights) + pad)
    return fig, fig.add_gridspec(len(names), ncols, height_ratios=heights)


def _resources(rows: list[dict[str, Any]]) -> Figure | None:
    if not any(r.get("cpu_mean") is not None or r.get("rss_peak") is not None for r in rows):
        return None
    names = workloads(rows)
    fig, gs = _bar_grid(names, rows, width=12, pad=0.6, ncols=2)
    extra_colors: dict[str, str] = {}
    pods = any(r.get("container_peak") is not None for r in rows)
    for i, workload in enumerate(names):
        wrows = [r for r in rows if r["workload"] == workload]
        labels = [column_label(r["framework"], r["workers"]) for r in wrows]
        colors = [_framework_color(r["framework"], extra_colors) for r in wrows]
        ys = list(range(len(wrows)))
        for j, (field, xlabel, scale, unit) in enumerate((
            ("cpu_mean", "CPU: SUM over workers of each one's mean (% of one core)", 1.0, "%"),
            ("rss_peak", ("memory: MAXIMUM over workers of each one's peak RSS (MiB);\n"
                          "hatched: its unique memory then, each page once (as a container "
                          "is charged)"
                          + (";\n|: the peak working set of its pod (Kubernetes' count)"
                             if pods else "")),
             1 / 2**20, " MiB"),
        )):
            ax = fig.add_subplot(gs[i, j])
            vals = [(r.get(field) or 0.0) * scale for r in wrows]
            ax.barh(ys, vals, color=colors, height=0.7)
            xmax = max(vals) if vals and max(vals) > 0 else 1.0
            unique = [None if j == 0 or r.get("unique_peak") is None
                      else r["unique_peak"] * scale for r in wrows]
            # Inside the RSS bar, the same worker's unique memory (each page once), where
            # measured: the RSS sum counts a page once per process that maps it.
            ax.barh([y for y, u in zip(ys, unique, strict=True) if u is not None],
                    [u for u in unique if u is not None], height=0.3, color="white",
                    alpha=0.55, edgecolor="black", linewidth=0.6, hatch="//")
            # On Kubernetes, the worker pod's working set (its memory cgroup) as a mark.
            pod = [None if j == 0 or r.get("container_peak") is None
                   else r["container_peak"] * scale for r in wrows]
            if any(p is not None for p in pod):
                ax.scatter([p for p in pod if p is not None],
                           [y for y, p in zip(ys, pod, strict=True) if p is not None],
                           marker="|", s=300, color="black", linewidths=2, zorder=3)
                xmax = max([xmax] + [p for p in pod if p is not None])
            for y, r, v, u, p in zip(ys, wrows, vals, unique, pod, strict=True):
                text = "FAILED" if r["state"] != "succeeded" else (
                    MISSING if r.get(field) is None else f"{v:.0f}{unit}")
                if text not in ("FAILED", MISSING):
                    text += "".join(f" ({name} {x:.0f})" for name, x in
                                    (("unique", u), ("pod", p)) if x is not None)
                ax.text(max(v, p or 0) + xmax * 0.01, y, text, va="center", fontsize=8,
                        color="#b00000" if text == "FAILED" else "black")
            ax.set_xlim(0, xmax * (1.2 if j == 0 else 1.45))
            ax.set_yticks(ys, labels if j == 0 else [""] * len(ys))
            ax.invert_yaxis()
            ax.set_xlabel(xlabel)
            ax.grid(True, axis="x", alpha=0.3)
            ax.set_title(f"{workload}: {'CPU' if j == 0 else 'memory'}", fontsize=12,
                         fontweight="bold", loc="left")
    fig.suptitle("Worker resource use per framework and worker count", fontsize=13)
    return fig


def _faults_figure(records: list[dict[str, Any]]) -> Figure | None:
    """Fault-free median vs the faulted run, per trial, with the kill time marked."""
    trials = [r for r in faulted(records)
              if r["faults"].get("applicable", True) and r["faults"].get("seconds") is not None]
    if not trials:
        return None
    names = workloads(trials)
    heights = _bar_heights(names, trials)
    fig = _new_figure(11, sum(heights) + 1.0)
    gs = fig.add_gridspec(len(names), 1, height_ratios=heights)
    extra: dict[str, str] = {}
    for i, workload in enumerate(names):
        ax = fig.add_subplot(gs[i, 0])
        wrows = [r for r in trials if r["workload"] == workload]
        ys = list(range(len(wrows)))
        medians = [describe(r.get("seconds") or [])["median"] or 0.0 for r in wrows]
        runs = [r["faults"]["seconds"] for r in wrows]
        ax.barh([y - 0.18 for y in ys], medians, height=0.34, color="#bbbbbb",
                label="fault-free median" if i == 0 else None)
        for y, r, run in zip(ys, wrows, runs, strict=True):
            f = r["faults"]
            ok = f.get("finished")
            ax.barh(y + 0.18, run, height=0.34,
                    color=_framework_color(r["framework"], extra) if ok else "#f2c4c4",
                    hatch=None if ok else "//", edgecolor="#b00000" if not ok else "white")
            for k in f.get("killed") or []:
                if "at" in k:
                    ax.plot([k["at"], k["at"]], [y - 0.42, y + 0.42], color="#b00000", lw=1.5)
            det, _, redo = observed(f)
            text = (f"{fmt_signed_seconds(f.get('penalty_seconds'))} s" if ok else
                    "FAILED: " + shorten(f.get("error") or "", 40))
            if det != MISSING:
                text += f"; detected {det} s; {redo}"
            ax.text(run + max(runs) * 0.01, y + 0.18, text, va="center", fontsize=8,
                    color="black" if ok else "#b00000")
        ax.set_yticks(ys, [column_label(r["framework"], r["workers"]) for r in wrows])
        ax.invert_yaxis()
        ax.set_xlim(0, max(runs + medians) * 1.9)
        ax.set_xlabel("seconds (red line: kill)")
        ax.set_title(workload, fontsize=12, fontweight="bold", loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside upper right", fontsize=9)
    fig.suptitle("Fault injection: fault-free median vs the run with workers killed",
                 fontsize=13, x=0.02, ha="left")
    return fig


def make_figures(records: Sequence[dict[str, Any]], outdir: str | Path,
                 references: References | None = None,
                 fitted: Sequence[Sweep] | None = None) -> list[Path]:
    """Write the report's PNG figures into ``outdir`` and return their paths.

    ``time_vs_workers.png`` (with ``references`` overlaid), ``speedup_efficiency.png``,
    ``scaling_model.png`` (the fits of ``fitted``, else fitted here), ``phases.png``,
    ``resources.png``, ``worker_timelines.png`` and ``faults.png`` (when any trial was
    faulted); a figure with nothing to show (e.g. no resource samples) is left out.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, whatever the environment says
    records = list(records)
    rows = summarize(records)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    builders: dict[str, Callable[[], Figure | None]] = {
        "time_vs_workers": lambda: _time_vs_workers(records, rows, references),
        "speedup_efficiency": lambda: _speedup_efficiency(rows),
        "scaling_model": lambda: scaling_model_figure(
            sweeps(records) if fitted is None else fitted, references, _COLORS),
        "phases": lambda: phases_figure(records),
        "resources": lambda: _resources(rows),
        "worker_timelines": lambda: worker_timelines_figure(records),
        "faults": lambda: _faults_figure(records),
    }
    paths = []
    for name, build in builders.items():
        fig = build()
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.savefig(path, format="png")
        paths.append(path)
    return paths
