"""Report-side statistics, apart from display: two result files compared with the noise rule
(``bench.results.is_beyond_noise``), the verdicts that count as a regression, and the trials
that had workers killed."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.frameworks import is_baseline
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
