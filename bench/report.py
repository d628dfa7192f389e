"""Tables, figures and self-contained reports built from result records.

* ``render_table`` / ``table_text``: the "Run Time Performance" table (workloads × framework
  and worker count, median seconds ± IQR) and the scaling table (speedup, efficiency, ratio to
  the local baselines, quality figure).
* ``write_report``: one HTML file with its figures embedded, or a Markdown file with its
  figures in a ``<stem>_figures/`` folder beside it.
* ``compare`` / ``render_compare``: two result files side by side with a noise-aware verdict.
* ``report_command`` / ``compare_command``: what ``testbed report`` and ``testbed compare`` run.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from .errors import RunError, UsageError  # noqa: E402
from .results import (  # noqa: E402
    NOISE_FRACTION,
    describe,
    is_beyond_noise,
    latest_records,
    read_records,
    sort_key,
    summarize,
)

MISSING = "—"

FRAMEWORK_COLORS = {
    "local": "#555555",
    "ray": "#1f77b4",
    "dask": "#ff7f0e",
    "dask-on-ray": "#2ca02c",
}
_EXTRA_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FRAMEWORK_MARKERS = {"local": "s", "ray": "o", "dask": "^", "dask-on-ray": "D"}
PHASES = ("startup", "load", "distribute", "compute")
PHASE_COLORS = {"startup": "#9ecae1", "load": "#fdae6b", "distribute": "#a1d99b",
                "compute": "#3182bd"}

# Figure file name -> (title, caption).
FIGURES = {
    "time_vs_workers": (
        "Compute time vs workers",
        "Median compute time of the timed repeats (bars: interquartile range) per framework "
        "and worker count. Dashed/dotted horizontal lines are the single-process local "
        "baselines with 1 thread and with every core.",
    ),
    "speedup_efficiency": (
        "Speedup and parallel efficiency",
        "Speedup = median at the smallest worker count / median at n workers; efficiency = "
        "speedup / (n / smallest count). The dashed black line is ideal linear scaling.",
    ),
    "phases": (
        "Where the time goes",
        "One-off phases (cluster start-up, data load, data distribution) and the median "
        "compute time, stacked per framework and worker count.",
    ),
    "resources": (
        "CPU and memory",
        "Mean CPU use summed over the workers (100 % = one core busy) and peak resident "
        "memory of the workers, per framework and worker count.",
    ),
    "faults": (
        "Fault tolerance",
        "Per faulted trial: the fault-free median (grey) and the run during which workers were "
        "killed (coloured if it finished, red hatching if it failed), the red line marking the "
        "kill; the label gives the penalty, the framework's detection time and its retries.",
    ),
}

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


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def _decimals(v: float) -> int:
    v = abs(v)
    if v >= 100:
        return 1
    if v >= 10:
        return 2
    return 3


def fmt_seconds(v: float | None, decimals: int | None = None) -> str:
    if v is None:
        return MISSING
    return f"{v:.{_decimals(v) if decimals is None else decimals}f}"


def fmt_median_iqr(median: float | None, iqr: float | None) -> str:
    """``"0.123 ±0.004"``: the IQR with as many decimals as the median."""
    if median is None:
        return MISSING
    d = _decimals(median)
    text = fmt_seconds(median, d)
    if iqr is not None:
        text += f" ±{iqr:.{d}f}"
    return text


def fmt_ratio(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2f}×"


def fmt_efficiency(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2f}"


def fmt_change(v: float | None) -> str:
    return MISSING if v is None else f"{v * 100:+.1f}%"


def fmt_number(v: Any) -> str:
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def column_label(framework: str, workers: int) -> str:
    """``"ray ×2"``; the local baseline counts threads: ``"local 4t"``."""
    return f"local {workers}t" if framework == "local" else f"{framework} ×{workers}"


def _framework_color(framework: str, seen: dict[str, str]) -> str:
    if framework in FRAMEWORK_COLORS:
        return FRAMEWORK_COLORS[framework]
    if framework not in seen:
        seen[framework] = _EXTRA_COLORS[len(seen) % len(_EXTRA_COLORS)]
    return seen[framework]


# --------------------------------------------------------------------------------------------
# Table data: (headers, body) where each cell is (text, style) and style is None | "failed" |
# "missing" | "good" | "bad".  Shared by the console, plain-text, Markdown and HTML renderers.
# --------------------------------------------------------------------------------------------

Cell = tuple[str, "str | None"]
Grid = tuple[list[str], list[list[Cell]]]


def _workloads(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["workload"] for r in rows))


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    keys = {(r["framework"], r["workers"]) for r in rows}
    return sorted(keys, key=lambda k: sort_key(("", k[0], k[1]))[1:])


def runtime_grid(rows: Sequence[dict[str, Any]]) -> Grid:
    """Workloads × (framework, workers): median seconds ± IQR, FAILED, or — when not run."""
    columns = _columns(rows)
    by_key = {(r["workload"], r["framework"], r["workers"]): r for r in rows}
    headers = ["Workload"] + [column_label(f, w) for f, w in columns]
    body = []
    for workload in _workloads(rows):
        line: list[Cell] = [(workload, None)]
        for f, w in columns:
            r = by_key.get((workload, f, w))
            if r is None:
                line.append((MISSING, "missing"))
            elif r["state"] != "succeeded":
                line.append(("FAILED", "failed"))
            else:
                line.append((fmt_median_iqr(r["median"], r["iqr"]), None))
        body.append(line)
    return headers, body


def _local_all_label(rows: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if r["framework"] == "local":
            counts[r["workload"]] = max(r["workers"], counts.get(r["workload"], 0))
    values = set(counts.values())
    return f"vs local {values.pop()}t" if len(values) == 1 else "vs local all threads"


def scaling_grid(rows: Sequence[dict[str, Any]]) -> Grid:
    """One line per trial: speedup, efficiency, ratios to the local baselines, quality."""
    headers = ["Workload", "Framework", "Workers", "Median (s)", "Speedup", "Efficiency",
               "vs local 1t", _local_all_label(rows), "Quality"]
    body = []
    for r in rows:
        failed = r["state"] != "succeeded"
        quality = MISSING
        if r.get("quality") is not None:
            quality = f"{r['quality_metric']} {fmt_number(r['quality'])}"
        line: list[Cell] = [
            (r["workload"], None),
            (r["framework"], None),
            (str(r["workers"]), None),
            ("FAILED", "failed") if failed else (fmt_median_iqr(r["median"], r["iqr"]), None),
            (fmt_ratio(r["speedup"]), None),
            (fmt_efficiency(r["efficiency"]), None),
            (fmt_ratio(r["vs_local_1"]), _ratio_style(r["vs_local_1"])),
            (fmt_ratio(r["vs_local_all"]), _ratio_style(r["vs_local_all"])),
            (quality, None),
        ]
        body.append(line)
    return headers, body


def _ratio_style(v: float | None) -> str | None:
    if v is None:
        return None
    return "good" if v > 1 else "bad"


def quality_grid(rows: Sequence[dict[str, Any]]) -> Grid:
    """Per workload: each trial's headline quality figure next to the local baseline's."""
    headers = ["Workload", "Metric", "Trial", "Value", "Local baseline", "Δ vs local"]
    body = []
    for r in rows:
        if r["framework"] == "local" or r["state"] != "succeeded":
            continue
        delta = r.get("quality_delta")
        style = None
        if delta is not None and abs(delta) > 1e-9:
            style = "bad" if abs(delta) > 0.01 else None
        body.append([
            (r["workload"], None),
            (r["quality_metric"] or MISSING, None),
            (column_label(r["framework"], r["workers"]), None),
            (fmt_number(r.get("quality")), None),
            (fmt_number(r.get("quality_local")), None),
            (MISSING if delta is None else f"{delta:+.4f}", style),
        ])
    return headers, body


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(_flatten(v, key))
            else:
                out[key] = v
    elif prefix:
        out[prefix] = d
    return out


def _short(v: Any, limit: int = 80) -> str:
    if isinstance(v, (list, tuple)):
        text = ", ".join(fmt_number(x) for x in v)
    else:
        text = fmt_number(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _faulted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # The local baselines are never faulted (no workers): leave them out.
    return [r for r in latest_records(records).values()
            if r.get("faults") and r.get("framework") != "local"]


def _victims(f: dict[str, Any]) -> str:
    killed = f.get("killed") or []
    if not killed:
        return MISSING
    parts = []
    for k in killed:
        what = "head" if k.get("role") == "head" else str(k.get("name"))
        parts.append(f"{what} (not killed: {k['error']})" if "error" in k else
                     f"{what} @{fmt_seconds(k.get('at'), 2)}s")
    return ", ".join(parts)


def _outcome(r: dict[str, Any], f: dict[str, Any]) -> Cell:
    if r.get("state") != "succeeded" and not f.get("killed"):
        return ("trial FAILED: " + _short(r.get("error") or "", 100), "failed")
    if not f.get("applicable", True):
        return ("not applicable: " + _short(f.get("reason") or "", 45), "missing")
    if f.get("finished"):
        ok = f.get("quality_matches")
        note = "" if ok is None else ("; same quality" if ok else "; quality DIFFERS")
        return ("finished" + note, "good" if ok is not False else "bad")
    return ("FAILED: " + _short(f.get("error") or "", 100), "failed")


def _observed(f: dict[str, Any]) -> tuple[str, str, str]:
    """(detected after, dead/replaced after, retried or recomputed) as text."""
    obs = f.get("observed") or {}
    if not obs.get("observed"):
        return (MISSING, MISSING, _short(obs.get("reason") or MISSING, 60))
    det = fmt_seconds(obs.get("detected_after_seconds"), 2)
    if "node_dead_after_seconds" in obs:  # Ray
        later = f"node dead {fmt_seconds(obs.get('node_dead_after_seconds'), 2)}"
        if (obs.get("replacement") or {}).get("by"):  # on Kubernetes, KubeRay's new pod
            rep = obs.get("replaced_after_seconds")
            later += "; not replaced" if rep is None else f"; replaced {fmt_seconds(rep, 2)}"
        fails = ", ".join(f"{n} {e}" for e, n in (obs.get("failed_by_error") or {}).items())
        redo = f"{obs.get('retried_tasks', 0)} retried" + (f" ({fails})" if fails else "")
    else:  # Dask
        rep = obs.get("replaced_after_seconds")
        later = "not replaced" if rep is None else f"replaced {fmt_seconds(rep, 2)}"
        lost = obs.get("lost_results", 0)
        redo = (f"{obs.get('recomputed_tasks', 0)} recomputed, "
                f"{lost} lost result{'' if lost == 1 else 's'}")
        if obs.get("killed_worker_errors"):
            redo += f", {obs['killed_worker_errors']} KilledWorker"
    return (det, later, redo)


def _settings_text(settings: dict[str, Any]) -> str:
    st = dict(settings)
    parts = []
    period, threshold = st.pop("health_check_period_ms", None), st.pop(
        "health_check_failure_threshold", None)
    if "nanny" in st:
        parts.append("nanny" if st.pop("nanny") else "no nanny")
    parts += [f"{k}={fmt_number(v)}" for k, v in st.items()]
    if period is not None:
        parts.append(f"health checks {period}ms×{threshold}")
    return ", ".join(parts)


def _signed_seconds(v: float | None) -> str:
    return MISSING if v is None else ("+" if v >= 0 else "−") + fmt_seconds(abs(v))


def fault_grid(records: Iterable[dict[str, Any]]) -> Grid | None:
    """One row per faulted trial: who was killed when, how the run ended, what it cost, and
    what the framework itself recorded (detection, retries/recomputations), with the
    fault-tolerance settings in effect."""
    faulted = _faulted(records)
    if not faulted:
        return None
    headers = ["Workload", "Trial", "Killed (s into run)", "Outcome", "Fault-free (s)",
               "Faulted (s)", "Penalty (s)", "Detected after (s)", "Then (s)",
               "Retried / recomputed", "Settings"]
    body = []
    for r in faulted:
        f = r["faults"]
        stats = describe(r.get("seconds") or [])
        det, later, redo = _observed(f)
        settings = _settings_text(f.get("settings") or {})
        body.append([
            (r["workload"], None),
            (column_label(r["framework"], int(r["workers"])), None),
            (_victims(f), None),
            _outcome(r, f),
            (fmt_seconds(stats["median"]), None),
            (fmt_seconds(f.get("seconds")) if f.get("seconds") is not None else MISSING, None),
            (_signed_seconds(f.get("penalty_seconds")), None),
            (det, "missing" if det == MISSING else None),
            (later, None),
            (redo, None),
            (settings or MISSING, None),
        ])
    return headers, body


def _unique(values: Iterable[Any], limit: int = 4) -> str:
    seen = list(dict.fromkeys(_short(v) for v in values if v is not None))
    if not seen:
        return MISSING
    if len(seen) > limit:
        return ", ".join(seen[:limit]) + f", … ({len(seen)} values)"
    return ", ".join(seen)


def environment_grid(records: Sequence[dict[str, Any]]) -> Grid:
    """What the results were measured on: run ids, time span, dataset, environment fields."""
    lines: list[list[Cell]] = []
    times = sorted(str(r["time"]) for r in records if r.get("time"))
    lines.append([("benchmark", None), (_unique(r.get("benchmark") for r in records), None)])
    lines.append([("runs", None), (_unique((r.get("run_id") for r in records), 6), None)])
    if times:
        span = times[0] if times[0] == times[-1] else f"{times[0]} … {times[-1]}"
        lines.append([("trials ended", None), (span, None)])
    lines.append([("records", None), (str(len(records)), None)])
    datasets = [_flatten(r.get("dataset") or {}) for r in records]
    for key in dict.fromkeys(k for d in datasets for k in d):
        lines.append([(f"dataset.{key}", None), (_unique(d.get(key) for d in datasets), None)])
    envs = [_flatten(r.get("environment") or {}) for r in records]
    for key in dict.fromkeys(k for e in envs for k in e):
        lines.append([(key, None), (_unique(e.get(key) for e in envs), None)])
    return ["Field", "Value"], lines


# --------------------------------------------------------------------------------------------
# Renderers for grids
# --------------------------------------------------------------------------------------------

_RICH_STYLES = {"failed": "bold red", "missing": "dim", "good": "green", "bad": "red"}


def _rich_table(grid: Grid, title: str, numeric_from: int = 1, wrap: bool = False) -> Table:
    headers, body = grid
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", show_lines=wrap)
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if i >= numeric_from else "left", no_wrap=not wrap)
    for line in body:
        table.add_row(*(Text(text, style=_RICH_STYLES.get(style or "", "")) for text, style in line))
    return table


def _tables(rows: Sequence[dict[str, Any]]) -> list[Table]:
    return [
        _rich_table(runtime_grid(rows), "Run Time Performance — median compute seconds ± IQR"),
        _rich_table(scaling_grid(rows), "Scaling and quality", numeric_from=2),
    ]


def render_table(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """Print the run-time table and the scaling/quality table of ``summarize`` rows."""
    console = console or Console()
    for table in _tables(rows):
        console.print(table)


def render_faults(records: Iterable[dict[str, Any]], console: Console | None = None) -> None:
    """Print the fault-injection table when any record has ``faults``."""
    grid = fault_grid(records)
    if grid is not None:
        (console or Console()).print(_rich_table(grid, "Fault tolerance", numeric_from=4,
                                                     wrap=True))


def _plain_console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, color_system=None,
                      force_terminal=False, highlight=False, emoji=False)
    return console, buf


def table_text(rows: Sequence[dict[str, Any]]) -> str:
    """The two tables of ``render_table`` as plain text (no colour codes)."""
    ncols = max(len(runtime_grid(rows)[0]), len(scaling_grid(rows)[0]))
    console, buf = _plain_console(max(120, 24 * ncols))
    render_table(rows, console)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def grid_markdown(grid: Grid, numeric_from: int = 1) -> str:
    headers, body = grid
    align = [("---:" if i >= numeric_from else ":---") for i in range(len(headers))]
    out = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
           "|" + "|".join(align) + "|"]
    for line in body:
        cells = []
        for text, style in line:
            text = _md_escape(text)
            cells.append(f"**{text}**" if style == "failed" else text)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def grid_html(grid: Grid, numeric_from: int = 1) -> str:
    headers, body = grid
    head = "".join(
        f'<th class="{"num" if i >= numeric_from else "txt"}">{html.escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    lines = []
    for line in body:
        cells = []
        for i, (text, style) in enumerate(line):
            classes = ["num" if i >= numeric_from else "txt"] + ([style] if style else [])
            cells.append(f'<td class="{" ".join(classes)}">{html.escape(text)}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines)
            + "\n</tbody></table>")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def _set_worker_axis(ax: Any, workers: Sequence[int]) -> None:
    ticks = sorted(set(workers))
    if not ticks:
        return
    if ticks[-1] / ticks[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    pad = 0.15 if ax.get_xscale() == "log" else 0.3
    if ax.get_xscale() == "log":
        ax.set_xlim(ticks[0] / 2**pad, ticks[-1] * 2**pad)
    else:
        span = max(1, ticks[-1] - ticks[0])
        ax.set_xlim(ticks[0] - pad * span / 2 - 0.2, ticks[-1] + pad * span / 2 + 0.2)


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _time_vs_workers(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> Figure | None:
    latest = latest_records(records)
    if not any(r["state"] == "succeeded" for r in rows):
        return None
    workloads = _workloads(rows)
    nrows, ncols = _grid_shape(len(workloads))
    fig = _new_figure(5.4 * ncols, 4.2 * nrows)
    extra_colors: dict[str, str] = {}
    for i, workload in enumerate(workloads):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        wrows = [r for r in rows if r["workload"] == workload]
        values: list[float] = []
        all_workers: list[int] = []
        failed: list[str] = []
        for framework in dict.fromkeys(r["framework"] for r in wrows if r["framework"] != "local"):
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
                        color=_framework_color(framework, extra_colors))
        local = {r["workers"]: r for r in wrows if r["framework"] == "local"}
        local_ok = {w: r for w, r in local.items() if r["state"] == "succeeded"}
        if local_ok:
            styles = [(min(local_ok), "--")]
            if max(local_ok) != min(local_ok):
                styles.append((max(local_ok), ":"))
            for threads, style in styles:
                m = local_ok[threads]["median"]
                values.append(m)
                label = "local 1 thread" if threads == 1 else f"local {threads} threads"
                ax.axhline(m, linestyle=style, color=FRAMEWORK_COLORS["local"], linewidth=1.6,
                           label=f"{label} ({fmt_seconds(m)} s)")
        failed += [column_label("local", w) for w in local if w not in local_ok]
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


def _speedup_efficiency(rows: list[dict[str, Any]]) -> Figure | None:
    if not any(r.get("speedup") is not None for r in rows):
        return None
    workloads = _workloads(rows)
    fig = _new_figure(11, 3.8 * len(workloads))
    extra_colors: dict[str, str] = {}
    for i, workload in enumerate(workloads):
        ax_s = fig.add_subplot(len(workloads), 2, 2 * i + 1)
        ax_e = fig.add_subplot(len(workloads), 2, 2 * i + 2)
        wrows = [r for r in rows if r["workload"] == workload]
        workers_all = [r["workers"] for r in wrows]
        max_s = 1.0
        bases = []
        for framework in dict.fromkeys(r["framework"] for r in wrows):
            pts = [r for r in wrows if r["framework"] == framework and r["speedup"] is not None]
            if not pts:
                continue
            bases.append(min(r["workers"] for r in wrows if r["framework"] == framework))
            label = "local (threads)" if framework == "local" else framework
            style = dict(marker=FRAMEWORK_MARKERS.get(framework, "o"), linewidth=1.8,
                         color=_framework_color(framework, extra_colors), label=label,
                         linestyle="-." if framework == "local" else "-")
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
            ax_s.yaxis.set_minor_locator(NullLocator())
            ax_s.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax_s.set_ylim(0, top * 1.1)
        ax_s.set_title(f"{workload}: speedup", fontsize=12, fontweight="bold")
        ax_e.set_title(f"{workload}: parallel efficiency", fontsize=12, fontweight="bold")
    fig.suptitle("Scaling relative to each framework's smallest worker count", fontsize=13)
    return fig


def _bar_heights(workloads: list[str], rows: list[dict[str, Any]]) -> list[float]:
    """Height in inches of each workload's horizontal bar chart (one bar per trial)."""
    return [max(2.0, 0.42 * sum(1 for r in rows if r["workload"] == w) + 1.2) for w in workloads]


def _phases(rows: list[dict[str, Any]]) -> Figure | None:
    if not any(r["state"] == "succeeded" for r in rows):
        return None
    workloads = _workloads(rows)
    heights = _bar_heights(workloads, rows)
    height = sum(heights) + 0.8
    fig = _new_figure(10, height)
    gs = fig.add_gridspec(len(workloads), 1, height_ratios=heights)
    for i, workload in enumerate(workloads):
        ax = fig.add_subplot(gs[i, 0])
        wrows = [r for r in rows if r["workload"] == workload]
        labels = [column_label(r["framework"], r["workers"]) for r in wrows]
        ys = list(range(len(wrows)))
        left = [0.0] * len(wrows)
        for phase in PHASES:
            widths = []
            for r in wrows:
                v = r["median"] if phase == "compute" else r.get(phase)
                widths.append(v if (r["state"] == "succeeded" and v) else 0.0)
            ax.barh(ys, widths, left=left, color=PHASE_COLORS[phase], edgecolor="white",
                    height=0.7, label=phase if i == 0 else None)
            left = [a + b for a, b in zip(left, widths)]
        xmax = max(left) if max(left) > 0 else 1.0
        for y, r, total in zip(ys, wrows, left):
            if r["state"] != "succeeded":
                ax.text(xmax * 0.01, y, "FAILED", va="center", color="#b00000",
                        fontweight="bold", fontsize=9)
            else:
                ax.text(total + xmax * 0.01, y, f"{fmt_seconds(total)} s", va="center",
                        fontsize=8)
        ax.set_xlim(0, xmax * 1.15)
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(workload, fontsize=12, fontweight="bold", loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside upper right", ncols=4, fontsize=9,
               title="phase (compute = median of the timed repeats)", title_fontsize=9)
    fig.suptitle("Per-phase time per framework and worker count", fontsize=13, x=0.02,
                 ha="left")
    return fig


def _resources(rows: list[dict[str, Any]]) -> Figure | None:
    if not any(r.get("cpu_mean") is not None or r.get("rss_peak") is not None for r in rows):
        return None
    workloads = _workloads(rows)
    heights = _bar_heights(workloads, rows)
    height = sum(heights) + 0.6
    fig = _new_figure(12, height)
    gs = fig.add_gridspec(len(workloads), 2, height_ratios=heights)
    extra_colors: dict[str, str] = {}
    for i, workload in enumerate(workloads):
        wrows = [r for r in rows if r["workload"] == workload]
        labels = [column_label(r["framework"], r["workers"]) for r in wrows]
        colors = [_framework_color(r["framework"], extra_colors) for r in wrows]
        ys = list(range(len(wrows)))
        for j, (field, xlabel, scale, unit) in enumerate((
            ("cpu_mean", "mean CPU (% of one core, summed over workers)", 1.0, "%"),
            ("rss_peak", "peak resident memory (MiB)", 1 / 2**20, " MiB"),
        )):
            ax = fig.add_subplot(gs[i, j])
            vals = [(r.get(field) or 0.0) * scale for r in wrows]
            ax.barh(ys, vals, color=colors, height=0.7)
            xmax = max(vals) if vals and max(vals) > 0 else 1.0
            for y, r, v in zip(ys, wrows, vals):
                text = "FAILED" if r["state"] != "succeeded" else (
                    MISSING if r.get(field) is None else f"{v:.0f}{unit}")
                ax.text(v + xmax * 0.01, y, text, va="center", fontsize=8,
                        color="#b00000" if text == "FAILED" else "black")
            ax.set_xlim(0, xmax * 1.2)
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
    faulted = [r for r in _faulted(records)
               if r["faults"].get("applicable", True) and r["faults"].get("seconds") is not None]
    if not faulted:
        return None
    workloads = _workloads(faulted)
    heights = _bar_heights(workloads, faulted)
    fig = _new_figure(11, sum(heights) + 1.0)
    gs = fig.add_gridspec(len(workloads), 1, height_ratios=heights)
    extra: dict[str, str] = {}
    for i, workload in enumerate(workloads):
        ax = fig.add_subplot(gs[i, 0])
        wrows = [r for r in faulted if r["workload"] == workload]
        ys = list(range(len(wrows)))
        medians = [describe(r.get("seconds") or [])["median"] or 0.0 for r in wrows]
        runs = [r["faults"]["seconds"] for r in wrows]
        ax.barh([y - 0.18 for y in ys], medians, height=0.34, color="#bbbbbb",
                label="fault-free median" if i == 0 else None)
        for y, r, run in zip(ys, wrows, runs):
            f = r["faults"]
            ok = f.get("finished")
            ax.barh(y + 0.18, run, height=0.34,
                    color=_framework_color(r["framework"], extra) if ok else "#f2c4c4",
                    hatch=None if ok else "//", edgecolor="#b00000" if not ok else "white")
            for k in f.get("killed") or []:
                if "at" in k:
                    ax.plot([k["at"], k["at"]], [y - 0.42, y + 0.42], color="#b00000", lw=1.5)
            det, later, redo = _observed(f)
            text = (f"{_signed_seconds(f.get('penalty_seconds'))} s" if ok else
                    "FAILED: " + _short(f.get("error") or "", 40))
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


def make_figures(records: Sequence[dict[str, Any]], outdir: str | Path) -> list[Path]:
    """Write the report's PNG figures into ``outdir`` and return their paths.

    ``time_vs_workers.png``, ``speedup_efficiency.png``, ``phases.png``, ``resources.png``
    and ``faults.png`` (when any trial was faulted); a figure with nothing to show (e.g. no resource samples) is left out.
    """
    records = list(records)
    rows = summarize(records)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    builders = {
        "time_vs_workers": lambda: _time_vs_workers(records, rows),
        "speedup_efficiency": lambda: _speedup_efficiency(rows),
        "phases": lambda: _phases(rows),
        "resources": lambda: _resources(rows),
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


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
th { background: #f4f4f4; border-bottom: 2px solid #ccc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.txt, th.txt { text-align: left; }
td.failed { color: #b00000; font-weight: bold; } td.missing { color: #aaa; }
td.good { color: #1a7f37; } td.bad { color: #b00000; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


def _title(records: Sequence[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(str(r.get("benchmark")) for r in records if r.get("benchmark")))
    return "Ray vs Dask benchmark" + (f": {', '.join(names)}" if names else "")


def _sections(records: list[dict[str, Any]]) -> list[tuple[str, Grid, int, str]]:
    """(heading, grid, first numeric column, intro) for every table of the report."""
    rows = summarize(records)
    sections = [
        ("Environment", environment_grid(records), 99,
         "Where and with what the results were measured (distinct values across trials)."),
        ("Run time performance", runtime_grid(rows), 1,
         "Median compute seconds of the timed repeats ± interquartile range. "
         "FAILED: the trial did not complete; —: not run."),
        ("Scaling", scaling_grid(rows), 2,
         "Speedup and efficiency relative to the same framework's smallest worker count; "
         "“vs local” is the local baseline's median divided by the trial's median "
         "(above 1: faster than the baseline)."),
    ]
    q = quality_grid(rows)
    if q[1]:
        sections.append(("Quality vs the local baseline", q, 3,
                         "The workload's headline quality figure for each distributed trial "
                         "next to the single-process baseline (most threads). A distributed "
                         "run should match it; a large Δ points at a partitioning problem."))
    faults = fault_grid(records)
    if faults is not None:
        sections.append(("Fault tolerance", faults, 4,
                         "One extra run per trial during which workers (or the head) were "
                         "killed. Penalty: that run minus the fault-free median. Detected "
                         "after: from the kill to the framework's first record of the failure "
                         "(Ray: a task attempt failing; Dask: the scheduler removing the "
                         "worker); then: Ray's GCS marking the node dead, or the Dask nanny's "
                         "replacement worker arriving. Retried / recomputed: Ray task attempts "
                         "above the first; Dask tasks that ran more than once."))
    return sections


def _load_summary(records: list[dict[str, Any]]) -> str:
    latest = latest_records(records)
    failed = sum(1 for r in latest.values() if r.get("state") != "succeeded")
    text = f"{len(latest)} trials ({len(latest) - failed} succeeded, {failed} failed)"
    return text + f", from {len(records)} records"


def _html(records: list[dict[str, Any]], figures: list[Path]) -> str:
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(_title(records))}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(_title(records))}</h1>",
        f'<p class="sub">Generated {generated}; {html.escape(_load_summary(records))}.</p>',
        "<h2>How to read this report</h2>", f"<p>{html.escape(HOW_TO_READ)}</p>",
    ]
    for heading, grid, numeric_from, intro in _sections(records):
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(intro)}</p>",
                  f'<div class="scroll">{grid_html(grid, numeric_from)}</div>']
    if figures:
        parts.append("<h2>Figures</h2>")
    for path in figures:
        title, caption = FIGURES[path.stem]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [
            "<figure>", f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">',
            f"<figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _markdown(records: list[dict[str, Any]], figures: list[Path], figure_dir: str) -> str:
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"# {_title(records)}", "",
        f"Generated {generated}; {_load_summary(records)}.", "",
        "## How to read this report", "", HOW_TO_READ, "",
    ]
    for heading, grid, numeric_from, intro in _sections(records):
        parts += [f"## {heading}", "", intro, "", grid_markdown(grid, numeric_from), ""]
    if figures:
        parts += ["## Figures", ""]
    for path in figures:
        title, caption = FIGURES[path.stem]
        parts += [f"### {title}", "", f"![{title}]({quote(figure_dir)}/{quote(path.name)})", "",
                  caption, ""]
    return "\n".join(parts)


def write_report(records: Iterable[dict[str, Any]], out_path: str | Path,
                 fmt: str = "html") -> Path:
    """Write a self-contained report and return its path.

    ``fmt="html"``: one file, figures embedded as base64 PNG.  ``fmt="md"``: Markdown, with the
    figures written to ``<stem>_figures/`` beside it and linked relatively.
    """
    records = list(records)
    if not records:
        raise UsageError("no result records to report on")
    if fmt not in ("html", "md"):
        raise UsageError(f"unknown report format {fmt!r}; expected 'html' or 'md'")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
            text = _html(records, make_figures(records, tmp))
    else:
        figure_dir = f"{out.stem}_figures"
        figures = make_figures(records, out.parent / figure_dir)
        text = _markdown(records, figures, figure_dir)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(out)
    return out


# --------------------------------------------------------------------------------------------
# Comparing two result files
# --------------------------------------------------------------------------------------------

def compare(records_a: Iterable[dict[str, Any]], records_b: Iterable[dict[str, Any]],
            threshold: float = NOISE_FRACTION) -> list[dict[str, Any]]:
    """Side by side per (workload, framework, workers), using the last record of each key.

    Row fields: ``workload``, ``framework``, ``workers``, ``median_a``, ``median_b``,
    ``iqr_a``, ``iqr_b``, ``state_a``, ``state_b`` (``None`` when absent from that file),
    ``change`` ((B - A) / A) and ``verdict``: ``faster`` / ``slower`` (B relative to A, beyond
    noise per ``is_beyond_noise`` with ``threshold`` as its fraction), ``within noise``,
    ``only in A`` / ``only in B``, ``failed in A`` / ``failed in B`` / ``failed in both``.
    """
    a, b = latest_records(records_a), latest_records(records_b)
    keys = list(a) + [k for k in b if k not in a]
    workload_rank = {w: i for i, w in enumerate(dict.fromkeys(k[0] for k in keys))}
    keys.sort(key=lambda k: (workload_rank[k[0]],) + sort_key(k)[1:])
    rows = []
    for key in keys:
        ra, rb = a.get(key), b.get(key)
        row: dict[str, Any] = {"workload": key[0], "framework": key[1], "workers": key[2]}
        sa = describe(ra.get("seconds") or []) if ra and ra.get("state") == "succeeded" else None
        sb = describe(rb.get("seconds") or []) if rb and rb.get("state") == "succeeded" else None
        row.update(
            state_a=ra.get("state") if ra else None, state_b=rb.get("state") if rb else None,
            median_a=sa["median"] if sa else None, median_b=sb["median"] if sb else None,
            iqr_a=sa["iqr"] if sa else None, iqr_b=sb["iqr"] if sb else None,
        )
        ma, mb = row["median_a"], row["median_b"]
        row["change"] = (mb - ma) / ma if ma and mb is not None else None
        if ra is None:
            verdict = "only in B"
        elif rb is None:
            verdict = "only in A"
        elif sa is None and sb is None:
            verdict = "failed in both"
        elif sa is None or ma is None:
            verdict = "failed in A"
        elif sb is None or mb is None:
            verdict = "failed in B"
        elif is_beyond_noise(ra["seconds"], rb["seconds"], threshold):
            verdict = "faster" if mb < ma else "slower"
        else:
            verdict = "within noise"
        row["verdict"] = verdict
        rows.append(row)
    return rows


_VERDICT_STYLES = {"faster": "bold green", "slower": "bold red", "within noise": "",
                   "failed in A": "red", "failed in B": "red", "failed in both": "red",
                   "only in A": "dim", "only in B": "dim"}


def render_compare(rows: Sequence[dict[str, Any]], console: Console | None = None,
                   title: str = "Comparison (B relative to A)") -> None:
    """Print ``compare`` rows: median A, median B, change and verdict."""
    console = console or Console()
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for name, justify in (("Workload", "left"), ("Framework", "left"), ("Workers", "right"),
                          ("Median A (s)", "right"), ("Median B (s)", "right"),
                          ("Change", "right"), ("Verdict", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(
            r["workload"], r["framework"], str(r["workers"]),
            fmt_median_iqr(r["median_a"], r["iqr_a"]) if r["state_a"] == "succeeded"
            else ("FAILED" if r["state_a"] else MISSING),
            fmt_median_iqr(r["median_b"], r["iqr_b"]) if r["state_b"] == "succeeded"
            else ("FAILED" if r["state_b"] else MISSING),
            fmt_change(r["change"]),
            Text(r["verdict"], style=_VERDICT_STYLES.get(r["verdict"], "")),
        )
    console.print(table)


# --------------------------------------------------------------------------------------------
# CLI glue
# --------------------------------------------------------------------------------------------

def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file; a missing, unreadable or empty file is a UsageError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"results file {str(path)!r} does not exist")
    if p.is_dir():
        raise UsageError(f"{str(path)!r} is a directory, not a results file")
    try:
        records = read_records(p)
    except OSError as e:
        raise UsageError(f"cannot read results file {str(path)!r}: {e.strerror or e}") from e
    if not records:
        raise UsageError(f"results file {str(path)!r} has no result records")
    return records


def report_format(out: str | Path, fmt: str | None) -> str:
    """The report format: ``fmt`` when given, else from the suffix of ``out`` (.html / .md)."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = {"htm": "html", "markdown": "md"}.get(fmt, fmt)
        if fmt not in ("html", "md"):
            raise UsageError(f"unknown report format {fmt!r}; expected 'html' or 'md'")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    if suffix in (".md", ".markdown"):
        return "md"
    raise UsageError(
        f"cannot tell the report format from {str(out)!r}; "
        "name the file .html or .md, or give the format explicitly"
    )


def report_text(records: Iterable[dict[str, Any]], fmt: str) -> str:
    """The report as text: HTML with its figures embedded, or Markdown without the figures
    (they are files, written only beside a report file)."""
    records = list(records)
    fmt = report_format("", fmt)
    if fmt == "md":
        return _markdown(records, [], "")
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        return _html(records, make_figures(records, tmp))


def report_command(results_path: str, out: str | None, fmt: str | None,
                   console: Console | None) -> int:
    """Print the tables of a results file; with ``out``, also write the report there.  With
    ``fmt`` and no ``out``, print the report itself instead (``testbed report r.jsonl --format
    md > report.md``)."""
    console = console or Console()
    records = load_results(results_path)
    if fmt and not out:
        sys.stdout.write(report_text(records, fmt))
        sys.stdout.flush()
        return 0
    target_fmt = report_format(out, fmt) if out else None
    render_table(summarize(records), console)
    render_faults(records, console)
    if out:
        path = write_report(records, out, target_fmt)
        console.print(f"Report written to {path}")
    return 0


REGRESSIONS = ("slower", "failed in B")
"""Verdicts that make ``testbed compare`` exit 1: B slower beyond noise, or failed where A
succeeded."""


def compare_command(path_a: str, path_b: str, console: Console | None,
                    threshold: float = NOISE_FRACTION, fail: bool = True) -> int:
    """Print two results files side by side (A = ``path_a``, B = ``path_b``).  With ``fail``,
    a regression in B (see ``REGRESSIONS``) is a RunError (exit status 1) naming the trials."""
    console = console or Console()
    rows = compare(load_results(path_a), load_results(path_b), threshold)
    render_compare(rows, console, title=f"Comparison: A = {path_a}, B = {path_b}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    console.print(", ".join(f"{n} {v}" for v, n in counts.items()))
    worse = [r for r in rows if r["verdict"] in REGRESSIONS]
    if fail and worse:
        names = ", ".join(
            f"{r['workload']}/{r['framework']}x{r['workers']} "
            + (fmt_change(r["change"]) if r["verdict"] == "slower" else "failed")
            for r in worse[:5]) + (", ..." if len(worse) > 5 else "")
        raise RunError(f"{len(worse)} of {len(rows)} trials regressed in B ({names}): slower "
                       f"beyond noise (both IQRs and {threshold * 100:g}%) or failed only in B; "
                       f"--no-fail to only compare")
    return 0
