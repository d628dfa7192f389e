"""The Grafana dashboard comparing Ray and Dask, generated from code.

``python -m testbed_operator.dashboard > charts/testbed/dashboards/testbed.json`` regenerates
the file that the chart ships (as a ConfigMap labelled for the Grafana sidecar); the tests
compare the two, parse every PromQL expression and check that each metric name is one a real
run exposes (the operator's, a real local Ray cluster's and a real Dask cluster's).

Rows: benchmark progress; trial time, speedup and efficiency; per-task overhead; CPU and
memory per worker (from the runner's samples, and live from Ray's and Dask's own exporters);
failures and retries.  Template variables: namespace, benchmark, workload, framework, trial.

The live panels read Ray's and Dask's own series, scraped by the chart's PodMonitors
(charts/testbed/templates/podmonitors.yaml). Those select only the testbed's pods (label
``testbed.dev/trial``) and copy the pods' ``testbed.dev/*`` labels onto every series as
``testbed_dev_benchmark``, ``testbed_dev_framework``, ``testbed_dev_trial`` (the Prometheus
Operator's ``podTargetLabels``, names sanitized to ``[a-zA-Z0-9_]``), which is what lets
these panels follow the variables. Every panel shows one unit: the tests check each metric's
unit against its panel's (``UNITS``).
"""
from __future__ import annotations

import json
import sys
from typing import Any

SEL = 'namespace=~"$namespace", benchmark=~"$benchmark"'
TRIAL = SEL + ', workload=~"$workload", framework=~"$framework"'
# The live series: the target labels the PodMonitors add (see the module docstring).
LIVE = ('namespace=~"$namespace", testbed_dev_benchmark=~"$benchmark", '
        'testbed_dev_framework=~"$framework", testbed_dev_trial=~"$trial"')

# Live metrics of the clusters themselves (names checked against real scrapes in the tests).
RAY_CPU = "ray_node_cpu_utilization"
RAY_MEM = "ray_node_mem_used"
DASK_WORKERS = "dask_scheduler_workers"
DASK_WORKER_MEM = "dask_worker_memory_bytes"
CORES = "suffix: cores"  # Grafana's custom unit "suffix:<text>"

# The one unit of each metric the dashboard shows; a panel's unit must be its metrics' unit.
# Ray's node_cpu_utilization is a percentage (ray/dashboard/modules/reporter/reporter_agent.py,
# METRICS_GAUGES: unit "percentage").
UNITS = {
    "testbed_trials": "short", "testbed_benchmarks": "short",
    "testbed_time_to_first_trial_seconds_bucket": "s", "testbed_trial_duration_seconds": "s",
    "testbed_trial_speedup": "short", "testbed_trial_efficiency_ratio": "percentunit",
    "testbed_task_overhead_seconds": "s", "testbed_trial_cpu_cores": CORES,
    "testbed_trial_memory_bytes": "bytes", "testbed_trial_pod_memory_bytes": "bytes",
    RAY_CPU: "percent", RAY_MEM: "bytes",
    DASK_WORKERS: "short", DASK_WORKER_MEM: "bytes", "testbed_trial_attempts": "short",
    "testbed_reconcile_errors_total": "short", "testbed_fault_penalty_seconds": "s",
    "testbed_fault_detection_seconds": "s", "testbed_fault_retried_tasks": "short",
    "testbed_fault_finished": "short",
}


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref}


def _panel(pid: int, title: str, kind: str, targets: list[tuple[str, str]],
           grid: tuple[int, int, int, int], unit: str = "short",
           description: str = "") -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": pid, "title": title, "type": kind, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": ({"legend": {"displayMode": "table", "placement": "bottom"}}
                    if kind == "timeseries" else {}),
        "targets": [_target(e, lg, chr(ord("A") + i)) for i, (e, lg) in enumerate(targets)],
    }


def _row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {"id": pid, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"}, "sort": 1}


def panels() -> list[dict[str, Any]]:
    by_fw = "{{framework}} x{{workers}} {{workload}}"
    live = "{{testbed_dev_trial}} {{pod}}"
    return [
        _row(1, "Progress", 0),
        _panel(2, "Trials by state", "stat",
               [(f"sum by (state) (testbed_trials{{{SEL}}})", "{{state}}")], (0, 1, 8, 5)),
        _panel(3, "Benchmarks by phase", "stat",
               [("sum by (phase) (testbed_benchmarks)", "{{phase}}")], (8, 1, 8, 5)),
        _panel(4, "Time from apply to first trial (p95)", "stat",
               [(("histogram_quantile(0.95, sum by (le) "
                 "(rate(testbed_time_to_first_trial_seconds_bucket[1h])))"), "p95")],
               (16, 1, 8, 5), unit="s"),
        _row(5, "Ray vs Dask: time and scaling", 6),
        _panel(6, "Trial time (median of timed repeats)", "bargauge",
               [(f"testbed_trial_duration_seconds{{{TRIAL}}}", by_fw)], (0, 7, 12, 9), unit="s"),
        _panel(7, "Speedup against the smallest worker count", "timeseries",
               [(f"testbed_trial_speedup{{{TRIAL}}}", by_fw)], (12, 7, 12, 9)),
        _panel(8, "Parallel efficiency", "timeseries",
               [(f"testbed_trial_efficiency_ratio{{{TRIAL}}}", by_fw)], (0, 16, 12, 8),
               unit="percentunit"),
        _panel(9, "Per-task overhead (tasks workload)", "bargauge",
               [(f'testbed_task_overhead_seconds{{{TRIAL}, mode="async"}}', "{{framework}} async"),
                (f'testbed_task_overhead_seconds{{{TRIAL}, mode="sync"}}', "{{framework}} sync")],
               (12, 16, 12, 8), unit="s"),
        _row(10, "CPU and memory per worker", 24),
        _panel(11, "Mean CPU of a trial's workers (cores)", "bargauge",
               [(f"testbed_trial_cpu_cores{{{TRIAL}}}", by_fw)], (0, 25, 12, 8), unit=CORES),
        _panel(12, "Peak memory of a trial's largest worker", "bargauge",
               [(f"testbed_trial_memory_bytes{{{TRIAL}}}", by_fw + " RSS"),
                (f"testbed_trial_pod_memory_bytes{{{TRIAL}}}", by_fw + " pod")],
               (12, 25, 12, 8), unit="bytes",
               description="RSS: the sum over the worker's processes (a page they share "
                           "counts once per process). Pod: the worker pod's working set, its "
                           "memory cgroup as kubectl top pod and the kubelet count it."),
        _panel(13, "Ray nodes, live: CPU", "timeseries",
               [(f"avg by (testbed_dev_trial, pod) ({RAY_CPU}{{{LIVE}}})", live)],
               (0, 33, 6, 8), unit="percent"),
        _panel(23, "Ray nodes, live: memory used", "timeseries",
               [(f"sum by (testbed_dev_trial, pod) ({RAY_MEM}{{{LIVE}}})", live)],
               (6, 33, 6, 8), unit="bytes"),
        _panel(14, "Dask, live: workers", "timeseries",
               [(f"sum by (testbed_dev_trial) ({DASK_WORKERS}{{{LIVE}}})",
                 "{{testbed_dev_trial}}")], (12, 33, 6, 8)),
        _panel(24, "Dask, live: worker memory", "timeseries",
               [(f"sum by (testbed_dev_trial, pod) ({DASK_WORKER_MEM}{{{LIVE}}})", live)],
               (18, 33, 6, 8), unit="bytes"),
        _row(15, "Failures and retries", 41),
        _panel(16, "Failed and skipped trials", "timeseries",
               [(f'sum by (benchmark) (testbed_trials{{{SEL}, state="Failed"}})',
                 "failed {{benchmark}}"),
                (f'sum by (benchmark) (testbed_trials{{{SEL}, state="Skipped"}})',
                 "skipped {{benchmark}}")],
               (0, 42, 8, 8)),
        _panel(17, "Trial attempts (> 1: retried)", "bargauge",
               [(f'testbed_trial_attempts{{{SEL}, framework=~"$framework"}}',
                 "{{benchmark}} {{framework}} x{{workers}}")], (8, 42, 8, 8)),
        _panel(18, "Operator reconcile errors", "timeseries",
               [(f"sum by (benchmark) (increase(testbed_reconcile_errors_total{{{SEL}}}[15m]))",
                 "{{benchmark}}")], (16, 42, 8, 8)),
        _row(19, "Fault tolerance (spec.faults: workers killed during an extra run)", 50),
        _panel(20, "Penalty: faulted run minus fault-free median", "bargauge",
               [(f"testbed_fault_penalty_seconds{{{TRIAL}}}", by_fw)], (0, 51, 8, 8), unit="s"),
        _panel(21, "Time to detect the failure", "bargauge",
               [(f"testbed_fault_detection_seconds{{{TRIAL}}}", by_fw)], (8, 51, 8, 8), unit="s"),
        _panel(22, "Retried / recomputed tasks; faulted run finished (1) or failed (0)",
               "bargauge",
               [(f"testbed_fault_retried_tasks{{{TRIAL}}}", "retried " + by_fw),
                (f"testbed_fault_finished{{{TRIAL}}}", "finished " + by_fw)], (16, 51, 8, 8)),
    ]


def build_dashboard() -> dict[str, Any]:
    return {
        "uid": "testbed-ray-vs-dask", "title": "Testbed: Ray vs Dask",
        "tags": ["testbed", "ray", "dask"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            _variable("namespace", "Namespace", "label_values(testbed_trials, namespace)"),
            _variable("benchmark", "Benchmark",
                      'label_values(testbed_trials{namespace=~"$namespace"}, benchmark)'),
            _variable("workload", "Workload",
                      'label_values(testbed_trial_duration_seconds{benchmark=~"$benchmark"}, '
                      'workload)'),
            _variable("framework", "Framework",
                      'label_values(testbed_trial_duration_seconds{benchmark=~"$benchmark"}, '
                      'framework)'),
            _variable("trial", "Trial (live panels)",
                      'label_values(testbed_trial_attempts{namespace=~"$namespace", '
                      'benchmark=~"$benchmark", framework=~"$framework"}, trial)'),
        ]},
        "panels": panels(),
    }


def dashboard_json() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(dashboard_json())
