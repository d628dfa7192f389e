"""The operator's Prometheus metrics (prometheus-client, own registry).

Trial results are re-exported from ``Benchmark.status`` on every status change (its
``results``: ``bench.record.StatusResult``, the one projection of a result record), so they
outlive the short-lived runner pods and survive an operator restart (the new process rebuilds
them from the statuses it reads).

Metric names (all prefixed ``testbed_``):

* ``trial_duration_seconds``   median compute seconds per benchmark/framework/workload/workers
* ``trial_speedup``, ``trial_efficiency_ratio``   against 1 worker of the same framework
* ``trial_cpu_cores``          mean CPU of the trial's worker processes (1 = one core)
* ``trial_memory_bytes``       peak RSS of the trial's largest worker (its processes' sum)
* ``trial_pod_memory_bytes``   peak working set of the trial's largest worker pod: its
  container's memory cgroup, as ``kubectl top pod`` and the kubelet count it (a page shared
  by the pod's processes once); only trials whose workers ran in the operator's pods
* ``task_overhead_seconds``    per-task cost of the ``tasks`` workload (mode async | sync)
* ``fault_penalty_seconds``    faulted run minus the fault-free median (``spec.faults``)
* ``fault_detection_seconds``  from the kill to the framework's first record of the failure
* ``fault_retried_tasks``      Ray task retries / Dask recomputed tasks in the faulted run
* ``fault_finished``           1 if the faulted run finished, 0 if it failed
* ``trial_attempts``           times a trial was started (more than 1: it was retried); its
  ``trial`` label is the trial's name, the ``testbed.dev/trial`` label of its pods
* ``trials``                   trials per benchmark and state
* ``benchmarks``               benchmarks per phase
* ``reconcile_errors_total``   handler errors per benchmark
* ``time_to_first_trial_seconds``   from apply to the first trial's cluster resource created

Deprecated aliases, exported with the same series for one release (CHANGELOG.md, issue 15):
``trial_cpu_percent`` (``trial_cpu_cores`` x 100) and ``trial_efficiency`` (the same value as
``trial_efficiency_ratio``). The names follow Prometheus' naming guide (base units, ``_ratio``
for ratios: https://prometheus.io/docs/practices/naming/).

client_python's ``_created`` series (one per counter and histogram, the time the series was
made) are switched off: they carry no information here and every scrape would show them.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import start_http_server

from bench.kube.names import trial_name
from bench.record import StatusResult

TRIAL_LABELS = ("namespace", "benchmark", "framework", "workload", "workers")
DEPRECATED = "Deprecated (removed in the next release): use "

# Process-wide in client_python (prometheus_client/metrics.py ``_use_created``): every Counter
# and Histogram made after this exports no ``<name>_created`` sample.
disable_created_metrics()  # type: ignore[no-untyped-call]  # client_python: no annotations


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.duration = Gauge("testbed_trial_duration_seconds",
                              "Median compute seconds of a trial's timed repeats", TRIAL_LABELS,
                              registry=r)
        self.speedup = Gauge("testbed_trial_speedup",
                             "Speedup against the smallest worker count of the same framework",
                             TRIAL_LABELS, registry=r)
        self.efficiency = Gauge("testbed_trial_efficiency_ratio",
                                "Speedup divided by relative workers (1 = linear scaling)",
                                TRIAL_LABELS, registry=r)
        self.cpu = Gauge("testbed_trial_cpu_cores",
                         "Mean CPU of the trial's worker processes, in cores (1 = one core)",
                         TRIAL_LABELS, registry=r)
        self.efficiency_old = Gauge("testbed_trial_efficiency",
                                    DEPRECATED + "testbed_trial_efficiency_ratio",
                                    TRIAL_LABELS, registry=r)
        self.cpu_percent_old = Gauge("testbed_trial_cpu_percent",
                                     DEPRECATED + "testbed_trial_cpu_cores (x 100)",
                                     TRIAL_LABELS, registry=r)
        self.memory = Gauge("testbed_trial_memory_bytes",
                            "Peak RSS of the trial's largest worker (its processes' sum)",
                            TRIAL_LABELS, registry=r)
        self.pod_memory = Gauge("testbed_trial_pod_memory_bytes",
                                "Peak working set of the trial's largest worker pod (its memory "
                                "cgroup, as kubectl top pod counts it)", TRIAL_LABELS, registry=r)
        self.overhead = Gauge("testbed_task_overhead_seconds",
                              "Per-task cost measured by the tasks workload",
                              (*TRIAL_LABELS, "mode"), registry=r)
        # The faulted run (spec.faults), from status.trials[].results[].fault.
        self.fault_penalty, self.fault_detection, self.fault_retried, self.fault_finished = (
            Gauge(name, doc, TRIAL_LABELS, registry=r) for name, doc in (
                ("testbed_fault_penalty_seconds",
                 "Faulted run minus the trial's fault-free median"),
                ("testbed_fault_detection_seconds",
                 "From the kill to the framework's first record of it"),
                ("testbed_fault_retried_tasks",
                 "Ray task retries or Dask recomputed tasks in the faulted run"),
                ("testbed_fault_finished", "1 if the faulted run finished, 0 if it failed")))
        # ``trial``: the trial's name (bench.kube.names.trial_name), the value of its pods'
        # testbed.dev/trial label: the dashboard's ``trial`` variable lists it.
        self.attempts = Gauge("testbed_trial_attempts", "Times a trial was started",
                              ("namespace", "benchmark", "framework", "workers", "trial"),
                              registry=r)
        self.trials = Gauge("testbed_trials", "Trials by state",
                            ("namespace", "benchmark", "state"), registry=r)
        self.benchmarks = Gauge("testbed_benchmarks", "Benchmarks by phase", ("phase",), registry=r)
        self.errors = Counter("testbed_reconcile_errors", "Reconcile errors",
                              ("namespace", "benchmark"), registry=r)
        self.first_trial = Histogram(
            "testbed_time_to_first_trial_seconds",
            "Seconds from a Benchmark's creation to its first trial's cluster resource",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self._phases: dict[tuple[str, str], str] = {}
        self._series: dict[tuple[str, str], set[tuple[str, ...]]] = {}

    def observe_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Export one Benchmark's status (idempotent: call on every status change)."""
        key = (namespace, name)
        self._phases[key] = status.get("phase", "Pending")
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            self.benchmarks.labels(phase).set(sum(p == phase for p in self._phases.values()))
        for state in ("Pending", "Running", "Succeeded", "Failed", "Skipped"):
            self.trials.labels(namespace, name, state).set(
                sum(t.get("state") == state for t in status.get("trials", [])))
        seen: set[tuple[str, ...]] = set()
        for row in status.get("summary", []):
            if row.get("median") is None:
                continue
            labels = (namespace, name, row["framework"], row["workload"], str(row["workers"]))
            seen.add(labels)
            self.duration.labels(*labels).set(row["median"])
            for gauge, field in ((self.speedup, "speedup"), (self.efficiency, "efficiency"),
                                 (self.efficiency_old, "efficiency")):
                if row.get(field) is not None:
                    gauge.labels(*labels).set(row[field])
        for t in status.get("trials", []):
            tl = (namespace, name, t["framework"], str(t["workers"]),
                  trial_name(name, t["framework"], int(t["workers"])))
            seen.add(("attempts", *tl))
            self.attempts.labels(*tl).set(t.get("attempts", 0))
            for res in t.get("results") or []:
                labels = (namespace, name, t["framework"], res.get("workload") or "?",
                          str(t["workers"]))
                seen |= self._observe_result(labels, res)
        for stale in self._series.get(key, set()) - seen:
            self._remove(stale)
        self._series[key] = seen

    def _observe_result(self, labels: tuple[str, ...], res: StatusResult) -> set[tuple[str, ...]]:
        """One ``status.trials[].results[]`` entry; returns the series it set."""
        seen: set[tuple[str, ...]] = set()
        cpu = res.get("cpu")  # percent of one core, as the runner samples it (bench.measure)
        for gauge, figure in ((self.cpu, None if cpu is None else cpu / 100),
                              (self.cpu_percent_old, cpu), (self.memory, res.get("memory")),
                              (self.pod_memory, res.get("podMemory"))):
            if figure is not None:
                seen.add(labels)
                gauge.labels(*labels).set(figure)
        fault = res.get("fault") or {}
        for gauge, value in ((self.fault_penalty, fault.get("penaltySeconds")),
                             (self.fault_detection, fault.get("detectedAfterSeconds")),
                             (self.fault_retried, fault.get("retriedTasks")),
                             (self.fault_finished, fault.get("finished"))):
            if value is not None:
                seen.add(("fault", *labels))
                gauge.labels(*labels).set(float(value))
        for mode, micros in (res.get("perTaskMicros") or {}).items():
            seen.add(("overhead", mode, *labels))
            self.overhead.labels(*labels, mode).set(micros / 1e6)
        return seen

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Benchmark: drop its series."""
        key = (namespace, name)
        for labels in self._series.pop(key, set()):
            self._remove(labels)
        for state in ("Pending", "Running", "Succeeded", "Failed", "Skipped"):
            with contextlib.suppress(KeyError):
                self.trials.remove(namespace, name, state)
        self._phases.pop(key, None)
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            self.benchmarks.labels(phase).set(sum(p == phase for p in self._phases.values()))

    def _remove(self, labels: tuple[str, ...]) -> None:
        if labels[0] == "attempts":
            targets = [(self.attempts, labels[1:])]
        elif labels[0] == "fault":
            targets = [(g, labels[1:]) for g in (self.fault_penalty, self.fault_detection,
                                                 self.fault_retried, self.fault_finished)]
        elif labels[0] == "overhead":
            targets = [(self.overhead, (*labels[2:], labels[1]))]
        else:
            targets = [(g, labels) for g in (self.duration, self.speedup, self.efficiency,
                                             self.efficiency_old, self.cpu,
                                             self.cpu_percent_old, self.memory,
                                             self.pod_memory)]
        for gauge, values in targets:
            with contextlib.suppress(KeyError):
                gauge.remove(*values)

    def reconcile_error(self, namespace: str, name: str) -> None:
        self.errors.labels(namespace, name).inc()

    def first_trial_started(self, seconds: float) -> None:
        self.first_trial.observe(seconds)

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics; returns (server, thread). Bind 0.0.0.0 only inside a pod."""
        return start_http_server(port, addr=addr, registry=self.registry)
