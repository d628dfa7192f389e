"""The table model: every table of the report as a ``Grid`` of text cells with a style.

A grid is ``(headers, body)``; each body cell is ``(text, style)`` with style ``None``,
``"failed"``, ``"missing"``, ``"good"``, ``"bad"`` or ``"flagged"`` (a noisy trial, marked
``formatting.FLAG``).  A cell's text may hold line breaks (one list item per line).  The
console, Markdown and HTML outputs render the same grids (``console``, ``markdown``,
``html``); nothing here prints.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bench.frameworks import is_baseline
from bench.results import describe, sort_key

from .cost import TrialCost
from .formatting import (
    FLAG,
    MISSING,
    column_label,
    fmt_amount,
    fmt_efficiency,
    fmt_median_iqr,
    fmt_number,
    fmt_percent,
    fmt_ratio,
    fmt_seconds,
    fmt_signed_seconds,
    shorten,
)
from .stats import faulted, tolerance, within_tolerance

Cell = tuple[str, str | None]
Grid = tuple[list[str], list[list[Cell]]]
Key = tuple[str, str, int]
Flags = dict[Key, list[str]]
"""Noise flags per (workload, framework, workers), from ``stats.trial_flags``."""


def workloads(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The workloads of ``rows`` in the order they first appear."""
    return list(dict.fromkeys(r["workload"] for r in rows))


def _columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    keys = {(r["framework"], r["workers"]) for r in rows}
    return sorted(keys, key=lambda k: sort_key(("", k[0], k[1]))[1:])


def runtime_grid(rows: Sequence[dict[str, Any]], flags: Flags | None = None) -> Grid:
    """Workloads × (framework, workers): median seconds ± IQR, FAILED, or — when not run; a
    flagged trial's cell ends with ``FLAG``."""
    flags = flags or {}
    columns = _columns(rows)
    by_key = {(r["workload"], r["framework"], r["workers"]): r for r in rows}
    headers = ["Workload"] + [column_label(f, w) for f, w in columns]
    body = []
    for workload in workloads(rows):
        line: list[Cell] = [(workload, None)]
        for f, w in columns:
            r = by_key.get((workload, f, w))
            if r is None:
                line.append((MISSING, "missing"))
            elif r["state"] != "succeeded":
                line.append(("FAILED", "failed"))
            elif (workload, f, w) in flags:
                line.append((f"{fmt_median_iqr(r['median'], r['iqr'])} {FLAG}", "flagged"))
            else:
                line.append((fmt_median_iqr(r["median"], r["iqr"]), None))
        body.append(line)
    return headers, body


def _local_all_label(rows: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if is_baseline(r["framework"]):
            counts[r["workload"]] = max(r["workers"], counts.get(r["workload"], 0))
    values = set(counts.values())
    return f"vs local {values.pop()}t" if len(values) == 1 else "vs local all threads"


def _ratio_style(v: float | None) -> str | None:
    if v is None:
        return None
    return "good" if v > 1 else "bad"


def scaling_grid(rows: Sequence[dict[str, Any]], flags: Flags | None = None) -> Grid:
    """One line per trial: speedup, efficiency, ratios to the local baselines, quality, and
    the trial's noise flags."""
    flags = flags or {}
    headers = ["Workload", "Framework", "Workers", "Median (s)", "Speedup", "Efficiency",
               "vs local 1t", _local_all_label(rows), "Quality", "Flags"]
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
        why = flags.get((r["workload"], r["framework"], r["workers"]))
        line.append((f"{FLAG} " + "; ".join(why), "flagged") if why else ("", None))
        body.append(line)
    return headers, body


def _tolerance_text(tol: tuple[float, float] | None) -> str:
    if tol is None:
        return MISSING
    absolute, relative = tol
    parts = ([f"±{relative * 100:g}%"] if relative else []) + (
        [f"±{absolute:g}"] if absolute or not relative else [])
    return " or ".join(parts)


def _relative(value: float | None, local: float | None) -> float | None:
    if value is None or local is None:
        return None
    if local == 0:
        return 0.0 if value == 0 else None
    return (value - local) / abs(local)


def quality_grid(rows: Sequence[dict[str, Any]]) -> Grid:
    """Per workload: each trial's headline quality figure next to the local baseline's, the
    difference in percent of the baseline, and whether it is within the workload's own
    tolerance (``Workload.tolerance`` and ``matches``: within the larger of the absolute and
    the relative bound); only a figure outside its tolerance is marked bad."""
    headers = ["Workload", "Metric", "Trial", "Value", "Local baseline", "Δ vs local",
               "Tolerance", "Matches"]
    body: list[list[Cell]] = []
    for r in rows:
        if is_baseline(r["framework"]) or r["state"] != "succeeded":
            continue
        value, local = r.get("quality"), r.get("quality_local")
        relative = _relative(value, local)
        ok = within_tolerance(r["workload"], r["quality_metric"], value, local)
        delta = fmt_percent(relative)
        if relative is None and r.get("quality_delta") is not None:
            delta = f"{r['quality_delta']:+.4g}"
        body.append([
            (r["workload"], None),
            (r["quality_metric"] or MISSING, None),
            (column_label(r["framework"], r["workers"]), None),
            (fmt_number(value), None),
            (fmt_number(local), None),
            (delta, "bad" if ok is False else None),
            (_tolerance_text(tolerance(r["workload"], r["quality_metric"])), None),
            (MISSING, None) if ok is None else (("yes", "good") if ok else ("NO", "bad")),
        ])
    return headers, body


def cost_grid(all_costs: dict[Key, TrialCost], money_label: str | None) -> Grid:
    """One line per succeeded trial: what one run (median compute seconds) held and cost;
    ``money_label`` (naming the prices) adds a money column."""
    headers = ["Workload", "Trial", "Median (s)", "Cores held", "Core-s held", "Core-s used",
               "Peak memory (GB)", "GB-s"] + ([money_label] if money_label else [])
    body: list[list[Cell]] = []
    for (workload, framework, workers), c in all_costs.items():
        line: list[Cell] = [
            (workload, None), (column_label(framework, workers), None),
            (fmt_seconds(c.seconds), None), (f"{c.cores:g}", None),
            (fmt_amount(c.core_seconds), None),
            (fmt_amount(c.used_core_seconds), "missing" if c.used_core_seconds is None else None),
            (fmt_amount(c.memory_gb), None), (fmt_amount(c.gb_seconds), None),
        ]
        if money_label:
            line.append((fmt_amount(c.money), None))
        body.append(line)
    return headers, body


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------

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
        return ("trial FAILED: " + shorten(r.get("error") or "", 100), "failed")
    if not f.get("applicable", True):
        return ("not applicable: " + shorten(f.get("reason") or "", 45), "missing")
    if f.get("finished"):
        ok = f.get("quality_matches")
        note = "" if ok is None else ("; same quality" if ok else "; quality DIFFERS")
        return ("finished" + note, "good" if ok is not False else "bad")
    return ("FAILED: " + shorten(f.get("error") or "", 100), "failed")


def observed(f: dict[str, Any]) -> tuple[str, str, str]:
    """What the framework recorded of a fault, as text: (detected after, dead/replaced after,
    retried or recomputed)."""
    obs = f.get("observed") or {}
    if not obs.get("observed"):
        return (MISSING, MISSING, shorten(obs.get("reason") or MISSING, 60))
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


def fault_grid(records: Iterable[dict[str, Any]]) -> Grid | None:
    """One row per faulted trial: who was killed when, how the run ended, what it cost, and
    what the framework itself recorded (detection, retries/recomputations), with the
    fault-tolerance settings in effect."""
    trials = faulted(records)
    if not trials:
        return None
    headers = ["Workload", "Trial", "Killed (s into run)", "Outcome", "Fault-free (s)",
               "Faulted (s)", "Penalty (s)", "Detected after (s)", "Then (s)",
               "Retried / recomputed", "Settings"]
    body = []
    for r in trials:
        f = r["faults"]
        stats = describe(r.get("seconds") or [])
        det, later, redo = observed(f)
        settings = _settings_text(f.get("settings") or {})
        body.append([
            (r["workload"], None),
            (column_label(r["framework"], int(r["workers"])), None),
            (_victims(f), None),
            _outcome(r, f),
            (fmt_seconds(stats["median"]), None),
            (fmt_seconds(f.get("seconds")) if f.get("seconds") is not None else MISSING, None),
            (fmt_signed_seconds(f.get("penalty_seconds")), None),
            (det, "missing" if det == MISSING else None),
            (later, None),
            (redo, None),
            (settings or MISSING, None),
        ])
    return headers, body


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------

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


def _one_value(v: Any, limit: int = 6) -> str:
    """A value as text; a list one item per line, the first ``limit`` items and a count."""
    if isinstance(v, (list, tuple)) and len(v) > 1:
        items = [shorten(x) for x in v[:limit]]
        more = f"\n… {len(v) - limit} more ({len(v)} in all)" if len(v) > limit else ""
        return "\n".join(items) + more
    return shorten(v)


def _unique(values: Iterable[Any], limit: int = 4) -> str:
    seen = list(dict.fromkeys(_one_value(v) for v in values if v is not None))
    if not seen:
        return MISSING
    sep = "\n" if any("\n" in v for v in seen) else ", "
    if len(seen) > limit:
        return sep.join(seen[:limit]) + f"{sep}… ({len(seen)} values)"
    return sep.join(seen)


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
