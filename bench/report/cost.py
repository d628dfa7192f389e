"""What one run of a trial costs: cores and memory it held for how long, and money at the
user's prices (``--price-core-hour``, ``--price-gb-hour``).

All figures are **per run of the workload**: the median compute seconds of the timed repeats
(the compute phase only; start-up, load and distribution are not counted), so trials with
different repeat counts compare fairly.

* allocated core-seconds = workers × CPUs per worker × median seconds (the local baseline: its
  threads × median seconds). CPUs per worker are what the engine ran with
  (``environment.engine.cpus_per_worker``, else the spec's ``worker_resources.cpu``, else 1).
* used core-seconds = ``resources.cpu_mean`` / 100 × median seconds. ``cpu_mean`` is the mean,
  over the samples taken during the timed repeats, of the CPU use summed over every worker's
  processes in percent of one core (``bench.measure.TreeSampler`` / ``combine_workers``);
  unknown with fewer than 2 samples per worker (one sample measures no interval).
* memory GB-seconds = peak memory summed over the workers in GB (10⁹ bytes) × median
  seconds. Where every worker ran in one of the operator's pods, a worker's peak is its pod's
  working set (``resources.workers[].container_working_set_peak``: its memory cgroup, what the
  pod is charged, each page once); otherwise its peak resident memory
  (``resources.rss_total_peak``, else ``rss_peak``), which counts a page its processes share
  once per process.
* money = allocated core-hours × price per core-hour + memory GB-hours × price per GB-hour.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.frameworks import is_baseline
from bench.quantities import cpu_cores
from bench.results import describe, latest_records

from .stats import ReportOptions

GB = 1e9
"""Bytes in the GB of ``--price-gb-hour`` (decimal, as cloud price lists use)."""


@dataclass(frozen=True)
class TrialCost:
    """One run's cost; ``None`` where a figure is unknown (see the module docstring)."""

    seconds: float
    cores: float
    core_seconds: float
    used_core_seconds: float | None
    memory_gb: float | None
    gb_seconds: float | None
    money: float | None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cpus_per_worker(record: dict[str, Any]) -> float:
    """The CPUs each worker of the trial had (see the module docstring)."""
    env = record.get("environment") or {}
    engine = env.get("engine") or {}
    v = _number(engine.get("cpus_per_worker"))
    if v is not None and v > 0:
        return v
    cpu = (env.get("worker_resources") or {}).get("cpu")
    if isinstance(cpu, str):
        try:
            return cpu_cores(cpu)
        except ValueError:
            pass
    return 1.0


def allocated_cores(record: dict[str, Any]) -> float:
    """Workers × CPUs per worker; the local baseline holds one core per thread."""
    workers = int(record.get("workers") or 0)
    if is_baseline(str(record.get("framework", ""))):
        return float(workers)
    return workers * cpus_per_worker(record)


def _used_cores(resources: dict[str, Any]) -> float | None:
    cpu = _number(resources.get("cpu_mean"))
    per_worker = resources.get("workers") or []
    samples = [w.get("samples") for w in per_worker if isinstance(w, dict)]
    if cpu is None or (samples and min(int(s or 0) for s in samples) < 2):
        return None
    return cpu / 100


def _peak_memory(resources: dict[str, Any]) -> float | None:
    """Bytes: the workers' pod working sets summed where every worker has one, else the
    peak RSS summed over the workers (see the module docstring)."""
    workers = [w for w in resources.get("workers") or [] if isinstance(w, dict)]
    pods = [_number(w.get("container_working_set_peak")) for w in workers]
    if pods and all(p is not None for p in pods):
        return sum(p for p in pods if p is not None)
    rss = _number(resources.get("rss_total_peak"))
    return rss if rss is not None else _number(resources.get("rss_peak"))


def trial_cost(record: dict[str, Any], options: ReportOptions | None = None) -> TrialCost | None:
    """The cost of one run of a succeeded trial; None when it did not succeed or has no
    timings."""
    if record.get("state") != "succeeded":
        return None
    median = describe(record.get("seconds") or [])["median"]
    if median is None:
        median = _number(record.get("median"))
    if median is None:
        return None
    options = options or ReportOptions()
    resources = record.get("resources") or {}
    cores = allocated_cores(record)
    used = _used_cores(resources)
    memory = _peak_memory(resources)
    memory_gb = memory / GB if memory is not None else None
    gb_seconds = memory_gb * median if memory_gb is not None else None
    money: float | None = None
    if options.priced:
        money = 0.0
        if options.price_core_hour is not None:
            money += cores * median / 3600 * options.price_core_hour
        if options.price_gb_hour is not None:
            hours = None if gb_seconds is None else gb_seconds / 3600
            money = None if hours is None else money + hours * options.price_gb_hour
    return TrialCost(seconds=median, cores=cores, core_seconds=cores * median,
                     used_core_seconds=used * median if used is not None else None,
                     memory_gb=memory_gb, gb_seconds=gb_seconds, money=money)


def costs(records: Iterable[dict[str, Any]], options: ReportOptions | None = None
          ) -> dict[tuple[str, str, int], TrialCost]:
    """:func:`trial_cost` of the latest record of every trial that has one."""
    out = {}
    for key, rec in latest_records(records).items():
        c = trial_cost(rec, options)
        if c is not None:
            out[key] = c
    return out


def cheapest(all_costs: dict[tuple[str, str, int], TrialCost], by_money: bool
             ) -> dict[str, tuple[tuple[str, str, int], TrialCost]]:
    """Per workload, the cheapest trial: by money when priced (and known), else by allocated
    core-seconds."""
    out: dict[str, tuple[tuple[str, str, int], TrialCost]] = {}
    for key, c in all_costs.items():
        value = c.money if by_money else c.core_seconds
        if value is None:
            continue
        best = out.get(key[0])
        best_value = None if best is None else (best[1].money if by_money else best[1].core_seconds)
        if best_value is None or value < best_value:
            out[key[0]] = (key, c)
    return out
