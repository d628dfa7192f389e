"""Interactive figures for the HTML report, drawn with bokeh (values on hover, zoom, pan).

Embedded with ``bokeh.embed.components`` and bokeh's JavaScript inlined
(``bokeh.resources.INLINE``), so the page stays one self-contained file that works offline.
The Markdown report keeps the PNG figures of ``figures``. The numbers are the same as the PNGs'
(``breakdown``, ``scaling``, ``bench.results.summarize``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from bench.frameworks import is_baseline
from bench.results import summarize

from .breakdown import PHASE_LABELS, TRIAL_PHASES, load_bars, phase_panels, timelines
from .scaling import EXTRAPOLATE_TO, Sweep, predict, sweeps

if TYPE_CHECKING:
    from bokeh.plotting import figure as Figure

    from .references import References

COLORS = {"local": "#555555", "ray": "#1f77b4", "dask": "#ff7f0e", "dask-on-ray": "#2ca02c"}
_EXTRA = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PHASE_COLORS = {"startup": "#9ecae1", "distribute": "#a1d99b", "warmup": "#bcbddc",
                "compute": "#3182bd", "load": "#fdae6b"}
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


class Interactive(NamedTuple):
    """One interactive figure: ``div`` goes where it is shown, ``script`` after it."""

    name: str
    title: str
    caption: str
    script: str
    div: str


def _color(framework: str, i: int) -> str:
    return COLORS.get(framework, _EXTRA[i % len(_EXTRA)])


def _plot(title: str, x_label: str, y_label: str, **kw: Any) -> Figure:
    from bokeh.plotting import figure

    p = figure(title=title, tools=TOOLS, width=kw.pop("width", 560),
               height=kw.pop("height", 360), **kw)
    p.xaxis.axis_label, p.yaxis.axis_label = x_label, y_label
    return p


def _start_at_zero(p: Figure) -> None:
    """The y axis starts at 0 (a DataRange1d, whose ``start`` bokeh's stubs do not show)."""
    y_range: Any = p.y_range
    y_range.start = 0


def _legend(p: Figure, outside: bool = False) -> None:
    """Legend entries hide their series on click; ``outside``: to the right of the plot, off
    the data (bokeh's documented ``add_layout(p.legend[0], "right")``)."""
    if p.legend:
        p.legend.click_policy = "hide"
        p.legend.label_text_font_size = "8pt"
        p.legend.location = "top_right"
        if outside:
            p.add_layout(p.legend[0], "right")


def time_vs_workers(records: Sequence[dict[str, Any]], refs: References | None
                    ) -> list[Figure]:
    from bokeh.models import HoverTool

    rows = summarize(records)
    out = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        p = _plot(f"{workload}: median compute time", "workers (processes)", "seconds")
        wrows = [r for r in rows if r["workload"] == workload and r["state"] == "succeeded"]
        for i, fw in enumerate(dict.fromkeys(r["framework"] for r in wrows)):
            pts = [r for r in wrows if r["framework"] == fw]
            src = {"workers": [r["workers"] for r in pts], "seconds": [r["median"] for r in pts],
                   "iqr": [r["iqr"] or 0.0 for r in pts], "series": [fw] * len(pts)}
            dash = "dashdot" if is_baseline(fw) else "solid"
            label = f"{fw} (threads)" if is_baseline(fw) else fw
            p.line("workers", "seconds", source=src, color=_color(fw, i), line_width=2,
                   line_dash=dash, legend_label=label)
            p.scatter("workers", "seconds", source=src, color=_color(fw, i), size=8,
                      legend_label=label)
        for i, (fw, ref) in enumerate((refs.series(workload) if refs else {}).items()):
            label = f"{fw}: {refs.label if refs else ''} (different setup)"
            src = {"workers": [w for w, _ in ref], "seconds": [v for _, v in ref],
                   "iqr": [0.0] * len(ref), "series": [label] * len(ref)}
            p.line("workers", "seconds", source=src, color=_color(fw, i), line_dash="dashed",
                   legend_label=label)
            p.scatter("workers", "seconds", source=src, color=_color(fw, i), size=9,
                      fill_color="white", legend_label=label)
        p.add_tools(HoverTool(tooltips=[("series", "@series"), ("workers", "@workers"),
                                        ("median", "@seconds{0.000} s"),
                                        ("IQR", "@iqr{0.000} s")]))
        _start_at_zero(p)
        _legend(p)
        out.append(p)
    return out


def scaling_model(fitted: Sequence[Sweep], refs: References | None) -> list[Figure]:
    from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, Range1d
    from bokeh.models.annotations import Band

    out = []
    xs = np.unique(np.concatenate([np.geomspace(1, max(EXTRAPOLATE_TO), 60),
                                   np.asarray(EXTRAPOLATE_TO, dtype=float)]))
    for i, s in enumerate(x for x in fitted if x.fits):
        color = _color(s.framework, i)
        x = xs[xs >= s.base]
        p = _plot(f"MODEL: {s.workload} on {s.framework} (extrapolated)", "workers",
                  f"speedup vs {s.base} worker(s)", x_axis_type="log", width=820)
        p.xaxis.ticker = FixedTicker(ticks=sorted({*s.speedups, *EXTRAPOLATE_TO}))
        ns = sorted(s.speedups)
        p.scatter(ns, [s.speedups[n] for n in ns], size=9, color=color,
                  legend_label="measured median speedup")
        for mf in s.fits:
            ys = predict(mf.model, mf.params, s.base, x)
            data: dict[str, Any] = {"workers": x, "speedup": ys,
                                    "model": [mf.model.name] * len(x)}
            band = s.band_curve(mf, x)
            data["lo"], data["hi"] = band if band is not None else (ys, ys)
            src = ColumnDataSource(data)
            p.line("workers", "speedup", source=src, color=color, line_width=2,
                   line_dash="solid" if mf.model.name == "USL" else "dotted",
                   legend_label=f"{mf.model.name} fit (model)")
            if band is not None:
                p.add_layout(Band(base="workers", lower="lo", upper="hi", source=src,
                                  fill_color=color, fill_alpha=0.15, line_alpha=0))
        if refs is not None and len(pts := refs.series(s.workload).get(s.framework, [])) > 1:
            p.line([w for w, _ in pts], [pts[0][1] / v for _, v in pts], color="#444444",
                   line_dash="dashed",
                   legend_label=f"{refs.label}: vs its own {pts[0][0]} workers (different setup)")
        p.line(x, x / s.base, color="black", line_dash="dashed", legend_label="ideal")
        top = max([*s.speedups.values(), *(mf.at[n][0] for mf in s.fits for n in EXTRAPOLATE_TO)])
        p.y_range = Range1d(start=0, end=top * 1.4)  # else the ideal line flattens the rest
        p.add_tools(HoverTool(tooltips=[("model", "@model"), ("workers", "@workers{0.0}"),
                                        ("speedup", "@speedup{0.00}"),
                                        ("90% band", "@lo{0.00} – @hi{0.00}")],
                              mode="vline"))
        _legend(p, outside=True)
        out.append(p)
    return out


def phases(records: Sequence[dict[str, Any]]) -> list[Figure]:
    from bokeh.models import HoverTool

    out = []
    loads = load_bars(records)
    if loads:
        labels = [f"{b.dataset} (run {b.run_id})" for b in loads]
        p = _plot("data load, once per run", "seconds", "", y_range=labels,
                  height=110 + 30 * len(loads), width=640)
        p.hbar(y=labels, right=[b.seconds for b in loads], height=0.6,
               color=PHASE_COLORS["load"])
        p.add_tools(HoverTool(tooltips=[("load", "@right{0.000} s")]))
        out.append(p)
    for panel in phase_panels(records):
        labels = [b.label for b in panel.bars][::-1]
        data: dict[str, list[Any]] = {"trial": labels}
        for ph in TRIAL_PHASES:
            data[ph] = [b.seconds.get(ph, 0.0) for b in panel.bars][::-1]
        data["state"] = ["FAILED" if b.failed else "succeeded" for b in panel.bars][::-1]
        data["warmup_runs"] = [b.warmup_runs for b in panel.bars][::-1]
        p = _plot(f"{panel.workload}: where the time goes", "seconds", "", y_range=labels,
                  height=120 + 34 * len(labels), width=960)
        p.hbar_stack(list(TRIAL_PHASES), y="trial", height=0.7, source=data,
                     color=[PHASE_COLORS[ph] for ph in TRIAL_PHASES],
                     legend_label=[PHASE_LABELS[ph] for ph in TRIAL_PHASES])
        p.add_tools(HoverTool(tooltips=[("trial", "@trial (@state)"),
                                        ("start-up", "@startup{0.000} s"),
                                        ("distribution", "@distribute{0.000} s"),
                                        ("warm-up", "@warmup{0.000} s (@warmup_runs runs)"),
                                        ("compute (median)", "@compute{0.000} s")]))
        _legend(p, outside=True)
        out.append(p)
    return out


def worker_timelines(records: Sequence[dict[str, Any]]) -> list[Any]:
    """Per trial, a row of two plots (CPU, memory) with one line per worker."""
    from bokeh.layouts import row
    from bokeh.models import HoverTool
    from bokeh.models.annotations import Title

    out = []
    trials, _ = timelines(records)
    for t in trials:
        cpu = _plot(f"{t.label}: CPU per worker", "seconds since sampling started",
                    "% of one core", width=580)
        mem = _plot(f"{t.label}: memory per worker", "seconds since sampling started",
                    "resident MiB", x_range=cpu.x_range, width=580)
        for i, line in enumerate(t.lines):
            src = {"t": line.t, "cpu": line.cpu, "rss": [v / 2**20 for v in line.rss],
                   "worker": [line.id] * len(line.t)}
            color = _EXTRA[i % len(_EXTRA)] if i >= 3 else ("#1f77b4", "#ff7f0e", "#2ca02c")[i]
            cpu.line("t", "cpu", source=src, color=color, legend_label=f"worker {line.id}")
            mem.line("t", "rss", source=src, color=color, legend_label=f"worker {line.id}")
        for p in (cpu, mem):
            p.add_tools(HoverTool(tooltips=[("worker", "@worker"), ("t", "@t{0.00} s"),
                                            ("CPU", "@cpu{0} %"), ("RSS", "@rss{0} MiB")]))
            _start_at_zero(p)
            _legend(p, outside=True)
            p.add_layout(Title(text=t.samples_text, text_font_style="italic",
                               text_font_size="8pt"), "above")
        out.append(row(cpu, mem))
    return out


def interactive_figures(records: Sequence[dict[str, Any]], refs: References | None = None,
                        fitted: Sequence[Sweep] | None = None,
                        captions: dict[str, tuple[str, str]] | None = None
                        ) -> list[Interactive]:
    """The HTML report's interactive figures (empty groups left out); ``captions`` maps a
    figure name to (title, caption), as ``sections.FIGURES``."""
    from bokeh.embed import components
    from bokeh.layouts import column

    fitted = sweeps(records) if fitted is None else fitted
    groups = {
        "time_vs_workers": time_vs_workers(records, refs),
        "scaling_model": scaling_model(fitted, refs),
        "phases": phases(records),
        "worker_timelines": worker_timelines(records),
    }
    out = []
    for name, plots in groups.items():
        if not plots:
            continue
        script, div = components(column(*plots))
        title, caption = (captions or {}).get(name, (name, ""))
        out.append(Interactive(name, title, caption, script, div))
    return out


def bokeh_resources() -> str:
    """Bokeh's JavaScript, inlined (``<script>`` tags for the page's ``<head>``)."""
    from bokeh.resources import INLINE

    return str(INLINE.render_js())
