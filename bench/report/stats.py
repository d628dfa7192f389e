"""Report-side statistics, apart from display: two result files compared with the noise rule
(``bench.results.is_beyond_noise``), the verdicts that count as a regression, the trials that
had workers killed, the noise flags of a trial, a quality figure judged by its workload's own
tolerance, and the report's options (:class:`ReportOptions`)."""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from bench.errors import UsageError
from bench.frameworks import is_baseline
from bench.params import WORKLOADS
from bench.results import NOISE_FRACTION, describe, is_beyond_noise, latest_records, sort_key

REGRESSIONS = ("slower", "failed in B")
"""Verdicts that make ``testbed compare`` exit 1: B slower beyond noise, or failed where A
succeeded."""


def _succeeded_stats(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record and record.get("state") == "succeeded":
        return describe(record.get("seconds") or [])
    return None


def _verdict(ra: dict[str, Any] | None, rb: dict[str, Any] | None,
             sa: dict[str, Any] | None, sb: dict[str, Any] | None, threshold: float) -> str:
    """The verdict on one trial: records ``ra``/``rb``, their statistics ``sa``/``sb`` (None
    when the trial did not succeed)."""
    if ra is None:
        return "only in B"
    if rb is None:
        return "only in A"
    if sa is None and sb is None:
        return "failed in both"
    if sa is None or sa["median"] is None:
        return "failed in A"
    if sb is None or sb["median"] is None:
        return "failed in B"
    if is_beyond_noise(ra["seconds"], rb["seconds"], threshold):
        return "faster" if sb["median"] < sa["median"] else "slower"
    return "within noise"


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
    keys.sort(key=lambda k: (workload_rank[k[0]], *sort_key(k)[1:]))
    rows = []
    for key in keys:
        ra, rb = a.get(key), b.get(key)
        row: dict[str, Any] = {"workload": key[0], "framework": key[1], "workers": key[2]}
        sa, sb = _succeeded_stats(ra), _succeeded_stats(rb)
        row.update(
            state_a=ra.get("state") if ra else None, state_b=rb.get("state") if rb else None,
            median_a=sa["median"] if sa else None, median_b=sb["median"] if sb else None,
            iqr_a=sa["iqr"] if sa else None, iqr_b=sb["iqr"] if sb else None,
        )
        ma, mb = row["median_a"], row["median_b"]
        row["change"] = (mb - ma) / ma if ma and mb is not None else None
        row["verdict"] = _verdict(ra, rb, sa, sb, threshold)
        rows.append(row)
    return rows


def verdict_counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many ``compare`` rows got each verdict, in the order the verdicts first appear."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


def regressions(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``compare`` rows whose verdict is one of ``REGRESSIONS``."""
    return [r for r in rows if r["verdict"] in REGRESSIONS]


def faulted(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest record of every trial that ran with fault injection."""
    # The local baselines are never faulted (no workers): leave them out.
    return [r for r in latest_records(records).values()
            if r.get("faults") and not is_baseline(r.get("framework", ""))]


# --------------------------------------------------------------------------------------------
# The report's options, noise flags and quality tolerance
# --------------------------------------------------------------------------------------------

NOISE_IQR_RATIO = 0.25
"""A trial whose IQR is more than this fraction of its median is flagged as noisy."""


def _check_positive(name: str, value: float | None, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value <= 0):
        raise UsageError(f"{name}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class ReportOptions:
    """What ``testbed report`` lets the user choose (``--noise-threshold``,
    ``--price-core-hour``, ``--price-gb-hour``); a bad value is a UsageError naming the
    option."""

    noise_threshold: float = NOISE_IQR_RATIO
    price_core_hour: float | None = None
    price_gb_hour: float | None = None

    def __post_init__(self) -> None:
        _check_positive("--noise-threshold", self.noise_threshold, allow_none=False)
        _check_positive("--price-core-hour", self.price_core_hour)
        _check_positive("--price-gb-hour", self.price_gb_hour)

    @property
    def priced(self) -> bool:
        """Whether the user gave a price, so that the report shows money."""
        return self.price_core_hour is not None or self.price_gb_hour is not None


def noise_flags(record: Mapping[str, Any], threshold: float = NOISE_IQR_RATIO) -> list[str]:
    """Why a succeeded trial's timings are less trustworthy, as short phrases: its IQR is more
    than ``threshold`` of its median (``"IQR/median 0.6"``), or the machine was busy while it
    ran (``record["machine"]["busy"]``, with ``busy_reason``; records written before the
    machine was watched have no ``machine`` and are never flagged busy)."""
    if record.get("state") != "succeeded":
        return []
    flags = []
    s = describe(record.get("seconds") or [])
    if s["n"] >= 2 and s["median"] and s["iqr"] / s["median"] > threshold:
        flags.append(f"IQR/median {s['iqr'] / s['median']:.2g}")
    machine = record.get("machine")
    if isinstance(machine, dict) and machine.get("busy"):
        reason = machine.get("busy_reason")
        flags.append(f"machine busy ({reason})" if reason else "machine busy")
    return flags


def trial_flags(records: Iterable[Mapping[str, Any]], threshold: float = NOISE_IQR_RATIO
                ) -> dict[tuple[str, str, int], list[str]]:
    """:func:`noise_flags` of the latest record of every flagged trial."""
    out = {}
    for key, rec in latest_records(records).items():
        flags = noise_flags(rec, threshold)
        if flags:
            out[key] = flags
    return out


@functools.cache
def workload_class(workload: str) -> Any:
    """The workload's class from the registry (``bench.params.WORKLOADS``, ``module:Class``),
    imported on first use; None for an unknown workload or one whose module cannot be imported
    here (e.g. without torch)."""
    info = WORKLOADS.get(workload)
    if info is None:
        return None
    module, name = info.impl.split(":")
    try:
        return getattr(import_module(f"bench.workloads.{module}"), name, None)
    except ImportError:
        return None


def tolerance(workload: str, metric: str | None) -> tuple[float, float] | None:
    """``(absolute, relative)`` tolerance of a workload's quality figure, or None."""
    cls = workload_class(workload)
    if cls is None or metric is None:
        return None
    tol = getattr(cls, "tolerance", {}).get(metric)
    return (float(tol[0]), float(tol[1])) if tol is not None else None


def within_tolerance(workload: str, metric: str | None, value: float | None,
                     local: float | None) -> bool | None:
    """Whether ``value`` matches the local baseline's ``local`` by the workload's own rule
    (``Workload.matches``); None when either value or the tolerance is unknown."""
    cls = workload_class(workload)
    if value is None or local is None or metric is None or tolerance(workload, metric) is None:
        return None
    result = cls.matches({metric: value}, {metric: local}).get(metric)
    return None if result is None else bool(result)
