"""Result records (JSON Lines) and their statistics.

One record per trial = (workload, framework, workers).  Records are appended, one line each,
as soon as a trial ends, so an interrupted run keeps everything it measured.  Each append is a
single ``write`` of a complete line followed by ``fsync``; readers skip a torn last line.

The record itself (its fields, version and factory) is :mod:`bench.record`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .frameworks import BASELINE, FRAMEWORKS, framework_rank, is_baseline
from .record import ResultRecord, upgrade

RecordT = TypeVar("RecordT", bound=Mapping[str, Any])  # a ResultRecord, or a plain dict of one


def append_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one record as one line; flushed and fsynced before returning."""
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    # Repair a torn last line left by a crash, so the new record starts on its own line.
    if p.exists() and p.stat().st_size:
        with open(p, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = line.encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | os.PathLike[str]) -> list[ResultRecord]:
    """Read every complete record, upgraded to the current version (bench.record.upgrade); a
    torn or corrupt line is skipped, never fatal."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            record = upgrade(rec)
            if record is not None:
                out.append(record)
    return out


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

#: Display/sort order of frameworks; unknown names sort after these, alphabetically.
FRAMEWORK_ORDER = FRAMEWORKS

#: Relative change below which two medians are never called different (see is_beyond_noise).
NOISE_FRACTION = 0.05

_STAT_KEYS = ("median", "iqr", "min", "max", "mean", "q25", "q75")


def describe(seconds: Iterable[float] | None) -> dict[str, Any]:
    """Summary statistics of timed repeats.

    Returns ``median``, ``iqr`` (75th minus 25th percentile, numpy's default linear
    interpolation), ``min``, ``max``, ``mean``, ``q25``, ``q75`` and ``n``.  An empty (or
    ``None``) input gives ``n == 0`` and ``None`` for every figure.
    """
    import numpy as np

    values = [float(s) for s in (seconds or []) if s is not None]
    if not values:
        return {**dict.fromkeys(_STAT_KEYS), "n": 0}
    a = np.asarray(values, dtype=float)
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return {
        "median": float(q50),
        "iqr": float(q75 - q25),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "q25": float(q25),
        "q75": float(q75),
        "n": len(values),
    }


def trial_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    """(workload, framework, workers) of a record."""
    return (str(record["workload"]), str(record["framework"]), int(record.get("workers") or 0))


def sort_key(key: tuple[str, str, int]) -> tuple[Any, ...]:
    """Order (workload, framework, workers) keys: framework in FRAMEWORK_ORDER, then workers."""
    workload, framework, workers = key
    rank = framework_rank(framework)
    return (workload, rank, framework, workers)


def latest_records(records: Iterable[RecordT]) -> dict[tuple[str, str, int], RecordT]:
    """The last record per (workload, framework, workers): a later run overrides an earlier one.

    The mapping is ordered by workload (first appearance), framework (FRAMEWORK_ORDER) and
    worker count.
    """
    last: dict[tuple[str, str, int], RecordT] = {}
    workload_rank: dict[str, int] = {}
    for rec in records:
        key = trial_key(rec)
        workload_rank.setdefault(key[0], len(workload_rank))
        last[key] = rec
    ordered = sorted(last, key=lambda k: (workload_rank[k[0]], *sort_key(k)[1:]))
    return {k: last[k] for k in ordered}


def _succeeded(record: Mapping[str, Any] | None) -> bool:
    return record is not None and record.get("state") == "succeeded"


def _stats_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """describe() of a record's repeats, falling back to its stored figures."""
    seconds = record.get("seconds") or []
    stats = describe(seconds)
    if stats["n"] == 0:
        for k in ("median", "iqr", "min"):
            v = record.get(k)
            stats[k] = float(v) if isinstance(v, (int, float)) else None
    return stats


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def headline_quality(record: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(quality_metric, value) of a record; value is None when absent or not numeric."""
    quality = record.get("quality") or {}
    metric = record.get("quality_metric")
    if not metric and len(quality) == 1:
        metric = next(iter(quality))
    value = quality.get(metric) if metric else None
    return metric, (float(value) if isinstance(value, (int, float)) else None)


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (workload, framework, workers), from the last record for that key.

    Row fields: ``workload``, ``framework``, ``workers``, ``state``, ``error``, ``median``,
    ``iqr``, ``min``, ``n`` (timed repeats), ``quality_metric``, ``quality`` (the headline
    value), ``quality_local`` (the same metric of the local baseline with most threads, else
    1 thread) and ``quality_delta`` (``quality - quality_local``), ``speedup``, ``efficiency``,
    ``vs_local_1``, ``vs_local_all``, ``startup``, ``load``, ``distribute`` (seconds of the
    one-off phases), ``cpu_mean`` (percent of one core), ``rss_peak`` (bytes) and
    ``unique_peak`` (bytes: the largest worker's unique memory at its RSS peak, each physical
    page its processes map once; None where not measured, bench.measure.tree_memory) and
    ``container_peak`` (bytes: on Kubernetes, the largest worker pod's peak working set,
    bench.measure.CgroupMemory; None elsewhere).

    * ``speedup`` = median at the framework's smallest worker count for that workload (normally
      1) / this median; ``efficiency`` = speedup / (workers / that smallest count).
    * ``vs_local_1`` = median of ``local`` with 1 thread / this median; ``vs_local_all`` =
      median of ``local`` with its largest thread count / this median.  Above 1 means faster
      than the baseline.
    * A baseline that is missing or failed gives ``None``.  A failed trial keeps its
      ``state`` and ``error`` and has ``None`` for every figure.
    """
    latest = latest_records(records)
    stats = {k: _stats_of(r) for k, r in latest.items() if _succeeded(r)}

    def median_of(key: tuple[str, str, int]) -> float | None:
        return stats[key]["median"] if key in stats else None

    # Smallest worker count per (workload, framework), whatever its state: a failed base
    # trial makes speedups unknown rather than silently moving the base.
    base_workers: dict[tuple[str, str], int] = {}
    local_counts: dict[str, list[int]] = {}
    for workload, framework, workers in latest:
        wf = (workload, framework)
        base_workers[wf] = min(workers, base_workers.get(wf, workers))
        if is_baseline(framework):
            local_counts.setdefault(workload, []).append(workers)

    rows = []
    for key, rec in latest.items():
        workload, framework, workers = key
        row: dict[str, Any] = {
            "workload": workload,
            "framework": framework,
            "workers": workers,
            "state": rec.get("state") or "unknown",
            "error": rec.get("error"),
        }
        metric, _ = headline_quality(rec)
        row["quality_metric"] = metric
        if key not in stats:
            row.update(dict.fromkeys((
                "median", "iqr", "min", "quality", "quality_local", "quality_delta",
                "speedup", "efficiency", "vs_local_1", "vs_local_all",
                "startup", "load", "distribute", "cpu_mean", "rss_peak", "unique_peak",
                "container_peak")))
            row["n"] = len(rec.get("seconds") or [])
            rows.append(row)
            continue
        s = stats[key]
        median = s["median"]
        row.update(median=median, iqr=s["iqr"], min=s["min"], n=s["n"])

        base = base_workers[(workload, framework)]
        speedup = _ratio(median_of((workload, framework, base)), median)
        row["speedup"] = speedup
        row["efficiency"] = speedup / (workers / base) if speedup is not None and base else None

        threads = local_counts.get(workload, [])
        local_1 = (workload, BASELINE, 1) if 1 in threads else None
        local_all = (workload, BASELINE, max(threads)) if threads else None
        row["vs_local_1"] = _ratio(median_of(local_1), median) if local_1 else None
        row["vs_local_all"] = _ratio(median_of(local_all), median) if local_all else None

        _, value = headline_quality(rec)
        row["quality"] = value
        local_value = None
        for lk in (local_all, local_1):
            if lk and _succeeded(latest.get(lk)):
                lrec = latest[lk]
                lq = (lrec.get("quality") or {}).get(metric) if metric else None
                if isinstance(lq, (int, float)):
                    local_value = float(lq)
                    break
        row["quality_local"] = local_value
        row["quality_delta"] = (
            value - local_value if value is not None and local_value is not None else None
        )

        phases = rec.get("phases") or {}
        for phase in ("startup", "load", "distribute"):
            v = phases.get(phase)
            row[phase] = float(v) if isinstance(v, (int, float)) else None
        resources = rec.get("resources") or {}
        row["cpu_mean"] = resources.get("cpu_mean")
        row["rss_peak"] = resources.get("rss_peak")
        row["unique_peak"] = resources.get("unique_at_rss_peak_max_worker")
        row["container_peak"] = resources.get("container_working_set_peak_max_worker")
        rows.append(row)
    return rows


def is_beyond_noise(a_seconds: Iterable[float], b_seconds: Iterable[float],
                    fraction: float = NOISE_FRACTION) -> bool:
    """Whether the medians of two sets of repeats differ by more than measurement noise.

    Rule: with ``d = |median_b - median_a|``, the change is beyond noise when

    * ``d`` is larger than the larger of the two interquartile ranges, **and**
    * ``d`` is more than ``fraction`` (default 5 %, ``NOISE_FRACTION``) of ``median_a`` (the
      reference).

    With fewer than 2 repeats on either side there is no spread to measure, so only the 5 %
    rule applies; single runs are therefore judged optimistically and should be read as an
    indication, not a verdict.  An empty side gives ``False`` (nothing to compare).
    """
    a, b = describe(a_seconds), describe(b_seconds)
    if a["n"] == 0 or b["n"] == 0:
        return False
    d = abs(b["median"] - a["median"])
    reference = a["median"] if a["median"] > 0 else max(a["median"], b["median"])
    if reference <= 0:
        return False
    if d <= fraction * reference:
        return False
    if a["n"] >= 2 and b["n"] >= 2:
        return bool(d > max(a["iqr"], b["iqr"]))
    return True
