"""The report's detailed PNG figures, drawn with matplotlib (imported by ``figures`` only when a
figure is drawn): where the time goes, each worker's CPU and memory over time, and the scaling
model. The numbers come from ``breakdown`` and ``scaling``; titles and captions are in
``sections.FIGURES``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .breakdown import PHASE_LABELS, TRIAL_PHASES, load_bars, phase_panels, timelines
from .formatting import fmt_seconds
from .scaling import EXTRAPOLATE_TO, Sweep, predict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .references import References

PHASE_COLORS = {"load": "#fdae6b", "startup": "#9ecae1", "distribute": "#a1d99b",
                "warmup": "#bcbddc", "compute": "#3182bd"}

def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def phases_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    panels = phase_panels(records)
    if not any(not b.failed for p in panels for b in p.bars):
        return None
    loads = load_bars(records)
    heights = [max(1.2, 0.4 * len(loads) + 0.8)] if loads else []
    heights += [max(2.0, 0.42 * len(p.bars) + 1.2) for p in panels]
    fig = _new_figure(10, sum(heights) + 0.9)
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    row = 0
    if loads:
        ax = fig.add_subplot(gs[0, 0])
        ys = list(range(len(loads)))
        vals = [b.seconds for b in loads]
        many_runs = len({b.run_id for b in loads}) > 1
        ax.barh(ys, vals, color=PHASE_COLORS["load"], height=0.6, label=PHASE_LABELS["load"])
        for y, v in zip(ys, vals, strict=True):
            ax.text(v * 1.01, y, f"{fmt_seconds(v)} s", va="center", fontsize=8)
        ax.set_yticks(ys, [b.dataset + (f" (run {b.run_id})" if many_runs else "")
                           for b in loads])
        ax.set_xlim(0, max(vals) * 1.2 or 1.0)
        ax.invert_yaxis()
        ax.set_title("data load, once per run", fontsize=11, fontweight="bold", loc="left")
        ax.grid(True, axis="x", alpha=0.3)
        row = 1
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(gs[row + i, 0])
        ys = list(range(len(panel.bars)))
        left = [0.0] * len(ys)
        for phase in TRIAL_PHASES:
            widths = [b.seconds.get(phase, 0.0) for b in panel.bars]
            ax.barh(ys, widths, left=left, color=PHASE_COLORS[phase], edgecolor="white",
                    height=0.7, label=PHASE_LABELS[phase] if i == 0 else None)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        xmax = max(left) if max(left) > 0 else 1.0
        for y, bar, total in zip(ys, panel.bars, left, strict=True):
            if bar.failed:
                ax.text(xmax * 0.01, y, "FAILED", va="center", color="#b00000",
                        fontweight="bold", fontsize=9)
            else:
                ax.text(total + xmax * 0.01, y, f"{fmt_seconds(total)} s", va="center",
                        fontsize=8)
        ax.set_xlim(0, xmax * 1.15)
        ax.set_yticks(ys, [b.label for b in panel.bars])
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(panel.workload, fontsize=12, fontweight="bold", loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Where the time goes: load once per run, then per trial", fontsize=13,
                 x=0.02, ha="left")
    return fig


def worker_timelines_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    trials, missing = timelines(records)
    if not trials:
        return None
    fig = _new_figure(12, 2.9 * len(trials) + (0.9 if missing else 0.6))
    for i, t in enumerate(trials):
        ax_c = fig.add_subplot(len(trials), 2, 2 * i + 1)
        ax_m = fig.add_subplot(len(trials), 2, 2 * i + 2)
        for line in t.lines:
            ax_c.plot(line.t, line.cpu, linewidth=1.2, label=f"worker {line.id}")
            ax_m.plot(line.t, [v / 2**20 for v in line.rss], linewidth=1.2,
                      label=f"worker {line.id}")
        ax_c.set_ylabel("CPU, % of one core (per worker)")
        ax_m.set_ylabel("resident memory, MiB (per worker)")
        for ax, what in ((ax_c, "CPU"), (ax_m, "memory")):
            ax.set_xlabel("seconds since sampling started")
            ax.set_title(f"{t.label}: {what} ({t.samples_text})", fontsize=10,
                         fontweight="bold", loc="left")
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        if len(t.lines) <= 12:
            ax_c.legend(fontsize=7, loc="best", ncols=2)
    if missing:
        fig.supxlabel("no timeline (older records), skipped: " + ", ".join(missing),
                      fontsize=8, color="#666666")
    fig.suptitle("Each worker's CPU and memory during the timed repeats (one line per worker, "
                 "not summed)", fontsize=12)
    return fig


def scaling_model_figure(fitted: Sequence[Sweep], refs: References | None = None,
                         colors: dict[str, str] | None = None) -> Figure | None:
    shown = [s for s in fitted if s.fits]
    if not shown:
        return None
    colors = colors or {}
    fig = _new_figure(6.2 * min(2, len(shown)), 4.3 * ((len(shown) + 1) // 2))
    xs = np.unique(np.concatenate([np.geomspace(1, max(EXTRAPOLATE_TO), 80),
                                   np.asarray(EXTRAPOLATE_TO, dtype=float)]))
    styles = {"Amdahl": ":", "USL": "-"}
    for i, s in enumerate(shown):
        ax = fig.add_subplot((len(shown) + 1) // 2, min(2, len(shown)), i + 1)
        color = colors.get(s.framework, "#1f77b4")
        x = xs[xs >= s.base]
        ns = sorted(s.speedups)
        ax.plot(ns, [s.speedups[n] for n in ns], "o", color=color, markersize=7,
                label=f"{s.framework}: measured", zorder=3)
        for mf in s.fits:
            ax.plot(x, predict(mf.model, mf.params, s.base, x), styles[mf.model.name],
                    color=color, linewidth=1.6, label=f"{mf.model.name} fit (model)")
            band = s.band_curve(mf, x) if mf.model.name == "USL" else None
            if band is not None:
                ax.fill_between(x, band[0], band[1], color=color, alpha=0.18,
                                label="USL 90 % bootstrap band")
        if refs is not None:
            pts = refs.series(s.workload).get(s.framework)
            if pts and len(pts) > 1:
                base = pts[0][1]
                ax.plot([w for w, _ in pts], [base / v for _, v in pts], "--", marker="o",
                        mfc="none", color="#444444",
                        label=f"{refs.label}: vs its own {pts[0][0]} workers (different setup)")
        ax.plot(x, x / s.base, color="k", linestyle="--", linewidth=0.8, label="ideal (linear)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({*ns, *EXTRAPOLATE_TO}))
        from matplotlib.ticker import FuncFormatter, NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top = max([*s.speedups.values(), *(mf.at[n][0] for mf in s.fits for n in EXTRAPOLATE_TO)])
        ax.set_ylim(0, top * 1.3)
        ax.axvspan(max(ns), max(EXTRAPOLATE_TO), color="#f2f2f2", zorder=0)
        ax.set_xlabel(f"workers (shaded: beyond the measured {max(ns)})")
        ax.set_ylabel(f"speedup vs {s.base} worker(s)")
        ax.set_title(f"MODEL: {s.workload} on {s.framework}", fontsize=11, fontweight="bold")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Scaling model: Amdahl and USL fitted to the measured sweep and extrapolated "
                 "(a model, not a measurement)", fontsize=12)
    return fig
