"""The result record: one per trial = (workload, framework, workers), one JSON line each.

The one definition of its fields (:class:`ResultRecord`), the one factory that makes one
(:func:`new_record`), the one reader that accepts every version written so far
(:func:`upgrade`) and the one projection to and from a ``Benchmark`` status
(:func:`to_status_result` / :func:`from_status_result`).

Versions (``schema_version``; asv's ``api_version`` is the model): a reader upgrades an older
record to the current shape, so code past :func:`upgrade` sees one version only.

* 1: every record written before the version was recorded (no ``schema_version`` key).
* 2: the same fields, with ``schema_version``.
* 3: adds ``machine``, ``artifacts``, ``data`` and the per-worker ``timeline``,
  ``pss_at_rss_peak`` and explicit ``*_sum_of_workers`` / ``*_max_worker`` keys of
  ``resources`` (issues 14 and 15). A version 2
  record simply lacks them: every reader treats them as absent.
* 4: adds ``unique_at_rss_peak`` (per worker) and ``unique_at_rss_peak_max_worker`` to
  ``resources``; an older record lacks them, read as absent.
* 5: adds ``container_working_set_peak`` (per worker) and
  ``container_working_set_peak_max_worker`` to ``resources``; read as absent before.

Fields (all JSON):

    schema_version int   SCHEMA_VERSION
    run_id        str    one id per ``testbed run`` / runner invocation
    benchmark     str    spec name
    time          str    ISO-8601 UTC end time of the trial
    framework     str    a bench.frameworks.Framework
    workers       int    worker processes (for the baseline: threads)
    workload      str    knn | kmeans | ... ; params: dict (validated, defaults filled)
    dataset       dict   {name, samples, features, classes, ...} as loaded
    state         str    succeeded | failed
    error         str|null
    phases        dict   startup, load, distribute: seconds (float|null);
                         warmup: [seconds]; compute: [seconds] (= ``seconds``)
    seconds       list   timed repeats (compute phase only)
    median, iqr, min     float|null  of ``seconds``
    quality       dict   e.g. {"accuracy": 0.97}; ``quality_metric`` names the headline figure
    tasks         int    tasks submitted per repeat (0 for the baseline)
    resources     dict   {"workers": [{"id", "pid"|"node", "cpu_mean", "cpu_peak",
                          "rss_mean", "rss_peak", "pss_at_rss_peak", "unique_at_rss_peak",
                          "container_working_set_peak",
                          "samples", "interval_s", "timeline"}],
                          "cpu_mean", "cpu_peak", "rss_peak", "rss_total_peak",
                          "cpu_mean_sum_of_workers", "cpu_peak_sum_of_workers",
                          "rss_peak_max_worker", "rss_peak_sum_of_workers",
                          "pss_at_rss_peak_max_worker", "unique_at_rss_peak_max_worker",
                          "container_working_set_peak_max_worker",
                          "samples_min_worker", "interval_s"}
                         (cpu in percent of one core, rss in bytes). Sampled during the
                         timed repeats only. Per worker: ``samples`` taken, ``interval_s``
                         its last interval (adaptive: ten samples 0.01 s apart, then 0.05 s,
                         doubled as points accumulate), ``timeline`` [[t, cpu, rss], ...]
                         (t: seconds since the compute phase started; at most 200 points,
                         4000 over all workers; merged: mean cpu, peak rss). Cluster:
                         the ``*_sum_of_workers`` / ``*_max_worker`` keys say how workers
                         combine; ``cpu_mean``, ``cpu_peak``, ``rss_peak``,
                         ``rss_total_peak`` are the same figures under their old names;
                         ``interval_s``: the largest worker interval. ``pss_at_rss_peak``:
                         the worker tree's PSS (bytes; shared pages divided among their
                         processes) read when its RSS sum peaked; null where the kernel
                         gives none. ``unique_at_rss_peak``: read with it, the bytes of the
                         distinct physical pages the tree maps (each page once, as a memory
                         cgroup charges it; bench.measure.tree_unique); null without
                         CAP_SYS_ADMIN (a non-root user, a pod).
                         ``container_working_set_peak``: on Kubernetes, the peak working set
                         of the worker's container (its memory cgroup: usage less inactive
                         file pages, as ``kubectl top pod`` shows it; the Dask nanny and a
                         Ray node's ``ray start`` process included; bench.measure.CgroupMemory);
                         null outside the operator's worker pods.
    machine       dict|null  the machine around the trial (distribute to the end of the
                         faulted run): {"before": {"load1", "load5", "steal_percent"},
                         "after": {...}, "other_cpu_percent", "busy", "busy_reason",
                         "seconds", "own_cpu_seconds"}. own_cpu_seconds: CPU used by the
                         trial's own processes (exited ones included, as last seen).
                         steal: percent of all CPU time, over 0.1 s before / over the
                         trial; other_cpu_percent: CPU used during the trial by processes
                         outside the driver's and the cluster's process trees,
                         percent of one core (null on a cluster we connected to); busy:
                         other_cpu_percent > 50 or steal > 5 (bench.measure.busy_rule)
    artifacts     dict|null  with ``artifacts`` on: the frameworks' own records of the timed
                         repeats, paths relative to the results file's folder
                         ({"dask_performance_report": ".../dask-performance-report.html",
                         "ray_timeline": ".../ray-timeline.json"}, whichever apply)
    extra         dict   workload-specific figures (per_task_us, samples_per_s, ...)
    environment   dict   versions, cores, hostname, platform, worker resources, threads
    faults        dict|null  fault-injection outcome (see bench.faults)
    data          dict|null  partitioned dataset reads of the last timed run (bench.data.readers):
                         {"uri", "partitions", "partitions_by_worker", "reads", "bytes_read",
                          "read_seconds_by_worker", "peak_rss_by_worker",
                          "spilled": {"ray_spilled_bytes"|"dask_spilled_bytes": int}}
                         from a library's own read tasks (etl with ``stages``, xgboost;
                         bench.data.readers.task_data_record) also "bytes_read_by_worker",
                         "read_tasks_by_worker", "peak_uss_by_worker" (Ray Data) and
                         "unavailable": {field: why it is null}
"""
from __future__ import annotations

from typing import Any, Required, TypedDict

SCHEMA_VERSION = 5
"""The version :func:`new_record` writes and :func:`upgrade` returns."""


class Phases(TypedDict, total=False):
    """Seconds of each phase of a trial (the status keeps the one-off phases only)."""

    startup: float | None
    load: float | None
    distribute: float | None
    warmup: list[float]
    compute: list[float]


class ResultRecord(TypedDict, total=False):
    """One trial's result (see the module docstring). A record rebuilt from a Benchmark status
    (:func:`from_status_result`) has only some of the fields; ``workload`` and ``framework``
    are always there (a line without them is not a record)."""

    schema_version: int
    run_id: str
    benchmark: str
    time: str
    framework: Required[str]
    workers: int
    workload: Required[str]
    params: dict[str, Any]
    dataset: dict[str, Any]
    state: str | None
    error: str | None
    phases: Phases
    seconds: list[float]
    median: float | None
    iqr: float | None
    min: float | None
    quality: dict[str, Any]
    quality_metric: str | None
    tasks: int
    resources: dict[str, Any] | None
    extra: dict[str, Any]
    environment: dict[str, Any]
    faults: dict[str, Any] | None
    machine: dict[str, Any] | None
    artifacts: dict[str, str] | None
    data: dict[str, Any] | None


def new_record(*, run_id: str, benchmark: str, framework: str, workers: int, workload: str,
               params: dict[str, Any], dataset: dict[str, Any], quality_metric: str | None,
               environment: dict[str, Any], load_seconds: float | None) -> ResultRecord:
    """A trial's record before it runs: ``state`` running, no figures yet."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "benchmark": benchmark,
        "framework": framework,
        "workers": workers,
        "workload": workload,
        "params": params,
        "dataset": dataset,
        "state": "running",
        "error": None,
        "phases": {"startup": None, "load": load_seconds, "distribute": None,
                   "warmup": [], "compute": []},
        "seconds": [],
        "quality": {},
        "quality_metric": quality_metric,
        "tasks": 0,
        "resources": None,
        "extra": {},
        "environment": environment,
        "faults": None,
        "machine": None,
        "artifacts": None,
    }


def upgrade(data: object) -> ResultRecord | None:
    """A record as read from JSON, in the current shape; None when ``data`` is not a record
    (not an object, or without ``workload`` and ``framework``). A record from a newer version
    than this code knows is returned as it is: versions so far only add fields."""
    if not isinstance(data, dict) or "workload" not in data or "framework" not in data:
        return None
    record: ResultRecord = data  # type: ignore[assignment]  # (checked above, as far as reading needs)
    if record.get("schema_version", 1) < SCHEMA_VERSION:
        # 1 -> 2: only the version itself was added; 2 -> 3 and 3 -> 4: optional
        # fields only.
        record["schema_version"] = SCHEMA_VERSION
    return record


# --------------------------------------------------------------------------------------------
# The projection to a Benchmark status (status.trials[].results[])
# --------------------------------------------------------------------------------------------

class FaultResult(TypedDict, total=False):
    """The faulted run in brief (the full record goes to resultsUri)."""

    applicable: bool
    reason: str | None
    killed: list[str]
    finished: bool
    error: str | None
    qualityMatches: bool
    seconds: float
    penaltySeconds: float
    detectedAfterSeconds: float
    workersRemoved: int
    nodeDeadAfterSeconds: float
    retriedTasks: int
    replacement: dict[str, Any]
    settings: dict[str, Any]


class StatusResult(TypedDict, total=False):
    """One record as the Benchmark status keeps it (camelCase, the figures the status, its
    summary and the operator's metrics need; the whole record goes to resultsUri)."""

    workload: str
    state: str | None
    error: str | None
    seconds: list[float]
    median: float | None
    iqr: float | None
    phases: dict[str, float | None]
    qualityMetric: str | None
    quality: float | None
    cpu: float | None
    """Mean CPU of the trial's workers, percent of one core (``resources.cpu_mean``)."""
    memory: float | None
    """Peak RSS of the trial's largest worker (the RSS sum of its processes), bytes
    (``resources.rss_peak``)."""
    podMemory: float | None
    """Peak working set of the trial's largest worker pod (its container's memory cgroup, as
    ``kubectl top pod`` and the kubelet count it), bytes
    (``resources.container_working_set_peak_max_worker``); None outside worker pods."""
    tasks: int | None
    perTaskMicros: dict[str, float]
    """The tasks workload's per-task cost by mode (``extra.per_task_us_<mode>``)."""
    fault: FaultResult


_PER_TASK = "per_task_us_"


def to_status_result(r: ResultRecord) -> StatusResult:
    """The record as ``status.trials[].results[]`` keeps it."""
    res = r.get("resources") or {}
    extra = r.get("extra") or {}
    metric = r.get("quality_metric")
    out: StatusResult = {
        "workload": r["workload"], "state": r.get("state"), "error": r.get("error"),
        "seconds": r.get("seconds", []), "median": r.get("median"), "iqr": r.get("iqr"),
        "phases": {k: v for k, v in (r.get("phases") or {}).items()  # type: ignore[misc]
                   if not isinstance(v, list)},  # (the one-off phases: floats or None)
        "qualityMetric": metric,
        "quality": (r.get("quality") or {}).get(metric or "", None),
        "cpu": res.get("cpu_mean"), "memory": res.get("rss_peak"),
        "podMemory": res.get("container_working_set_peak_max_worker"), "tasks": r.get("tasks"),
    }
    if any(k.startswith(_PER_TASK) for k in extra):
        out["perTaskMicros"] = {k[len(_PER_TASK):]: v for k, v in extra.items()
                                if k.startswith(_PER_TASK) and v is not None}
    faults = r.get("faults")
    if faults:
        out["fault"] = _fault_result(faults)
    return out


def _fault_result(f: dict[str, Any]) -> FaultResult:
    """What was killed, how the run ended, its penalty and what the framework recorded."""
    if not f.get("applicable", True):
        return {"applicable": False, "reason": f.get("reason")}
    obs = f.get("observed") or {}
    out = {
        "killed": [k.get("name") if "error" not in k else f"{k.get('name')} ({k['error']})"
                   for k in f.get("killed") or []],
        "finished": f.get("finished"), "error": f.get("error"),
        "qualityMatches": f.get("quality_matches"), "seconds": f.get("seconds"),
        "penaltySeconds": f.get("penalty_seconds"),
        "detectedAfterSeconds": obs.get("detected_after_seconds"),
        # Workers the framework saw go (Ray: nodes the GCS marked dead; Dask: workers the
        # scheduler removed), and for Ray when: a node can drain and go without failing a task
        # (a deleted pod's container gets SIGTERM first), so detection by task failure may
        # never come.
        "workersRemoved": obs.get("workers_removed"),
        "nodeDeadAfterSeconds": obs.get("node_dead_after_seconds"),
        "retriedTasks": obs.get("retried_tasks", obs.get("recomputed_tasks")),
        "replacement": _camel(obs.get("replacement")),
        "settings": f.get("settings") or {},
    }
    return {k: v for k, v in out.items() if v is not None}  # type: ignore[return-value]


def _camel(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"after_seconds": 1}`` → ``{"afterSeconds": 1}`` (one level)."""
    if not d:
        return None
    return {k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): v
            for k, v in d.items()}


def from_status_result(framework: str, workers: int, res: StatusResult) -> ResultRecord:
    """The record's shape rebuilt from what the status keeps (so the status summary survives
    an operator restart): the fields ``bench.results.summarize`` reads."""
    metric = res.get("qualityMetric") or ""
    return {"workload": res.get("workload") or "", "framework": framework, "workers": workers,
            "state": res.get("state"), "error": res.get("error"),
            "seconds": res.get("seconds") or [],
            "phases": res.get("phases") or {},  # type: ignore[typeddict-item]
            "quality_metric": metric, "quality": {metric: res.get("quality")},
            "resources": {"cpu_mean": res.get("cpu"), "rss_peak": res.get("memory"),
                          "container_working_set_peak_max_worker": res.get("podMemory")}}
