"""The trial state machine as pure functions over ``Benchmark.status``.

The Kopf handlers (to come) only read the status, call these, and patch the result back, so
every step is idempotent and an operator restarted mid-trial resumes from the status:

* :func:`initial_status`: the plan, one trial per framework × worker count, all ``Pending``;
* :func:`next_trial`: the trial to work on: the one already ``Running`` (resume, never start a
  second), else the first ``Pending``; ``None`` when nothing is left or the policy says stop;
* :func:`start_trial` / :func:`finish_trial`: state transitions; ``finish_trial`` stores the
  runner's result records (timings, quality, CPU/memory, error) in the trial, projected by
  ``bench.record.to_status_result``;
* :func:`refresh`: phase, progress, message, current trial, conditions and the summary
  (median, IQR, speedup, efficiency per framework × workers, computed by the engine's own
  statistics);
* :func:`failed_status`: a Benchmark refused before planning (``InvalidSpec``, a missing
  runner ServiceAccount), failed once with the reason.

Conditions follow ``metav1.Condition`` (type, status, reason, message, lastTransitionTime,
observedGeneration; k8s.io/apimachinery/pkg/apis/meta/v1/types.go), one per type:

* ``Running``: True while the phase is Running;
* ``Succeeded``: True once every trial succeeded; False otherwise;
* ``Failed``: True once the Benchmark failed (a trial failed, or the spec was refused).

So ``kubectl wait --for=condition=Succeeded`` tells success from failure, and
``kubectl wait --for=condition=Failed`` the opposite. ``lastTransitionTime`` changes only when
a condition's status changes.

Trial states: Pending → Running → Succeeded | Failed.  Benchmark phases: Pending → Running →
Succeeded (every trial succeeded) | Failed (a trial failed; with ``failurePolicy: stop`` the
remaining trials are skipped, with ``continue`` they still run).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bench.record import ResultRecord, from_status_result, to_status_result
from bench.results import summarize
from bench.spec import BenchmarkSpec

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = (
    "Pending", "Running", "Succeeded", "Failed", "Skipped")
DONE = (SUCCEEDED, FAILED, SKIPPED)


def now(precise: bool = False) -> str:
    """RFC 3339 UTC; ``precise``: with milliseconds (for timestamps a duration is measured
    from, e.g. a cluster's creation)."""
    spec = "milliseconds" if precise else "seconds"
    return datetime.now(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def cluster_startup_seconds(trial: dict[str, Any], records: Iterable[ResultRecord]
                            ) -> float | None:
    """``clusterStartupSeconds``: from the creation of the trial's cluster object (the RayJob,
    ``submittedAt``; the DaskCluster, ``clusterCreatedAt``) until the runner had N workers
    registered (``environment.engine.ready_at`` of its records, the engine's one definition
    of a ready cluster). The same for Ray and Dask, and what a local run's ``phases.startup``
    measures (from starting the cluster until N workers are registered). None when the runner
    never got there."""
    created = trial.get("clusterCreatedAt") or trial.get("submittedAt")
    ready_at = [((r.get("environment") or {}).get("engine") or {}).get("ready_at")
                for r in records]
    ready = [float(t) for t in ready_at if isinstance(t, (int, float))]
    if not created or not ready:
        return None
    start = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return round(max(0.0, min(ready) - start), 3)


def plan(spec: BenchmarkSpec) -> list[tuple[str, int]]:
    """Trials in run order: each framework's sweep, one at a time (no timing interference)."""
    return [(f, w) for f in spec.frameworks for w in spec.workers]


def initial_status(spec: BenchmarkSpec) -> dict[str, Any]:
    trials = [{"framework": f, "workers": w, "state": PENDING, "attempts": 0}
              for f, w in plan(spec)]
    status = {"phase": PENDING, "trials": trials, "summary": [], "conditions": [],
              "workload": ",".join(w.name for w in spec.workloads),
              "frameworks": ",".join(spec.frameworks)}
    return refresh(status, "continue")


def _stopped(status: dict[str, Any], policy: str) -> bool:
    return policy == "stop" and any(t["state"] == FAILED for t in status["trials"])


def next_trial(status: dict[str, Any], policy: str = "continue") -> int | None:
    trials = status["trials"]
    for i, t in enumerate(trials):
        if t["state"] == RUNNING:
            return i  # resume: never start a second trial while one runs
    if _stopped(status, policy):
        return None
    return next((i for i, t in enumerate(trials) if t["state"] == PENDING), None)


def start_trial(status: dict[str, Any], index: int, policy: str = "continue") -> dict[str, Any]:
    status = copy.deepcopy(status)
    t = status["trials"][index]
    if t["state"] == RUNNING:
        return status  # idempotent: already started (e.g. a retried handler)
    if t["state"] != PENDING:
        raise ValueError(f"trial {index} is {t['state']}, cannot start it")
    t.update(state=RUNNING, startedAt=now(), attempts=t.get("attempts", 0) + 1)
    return refresh(status, policy)


PER_ATTEMPT = ("startedAt", "submittedAt", "clusterCreatedAt", "clusterReadyAt",
               "clusterStartupSeconds", "cluster")


def retry_trial(status: dict[str, Any], index: int, error: str,
                policy: str = "continue") -> dict[str, Any]:
    """A Running trial whose attempt failed without results goes back to Pending for another
    attempt; the failure is kept in ``previousErrors``."""
    status = copy.deepcopy(status)
    t = status["trials"][index]
    if t["state"] != RUNNING:
        return refresh(status, policy)  # idempotent
    for k in PER_ATTEMPT:
        t.pop(k, None)
    t["previousErrors"] = [*t.get("previousErrors", []), f"attempt {t.get('attempts', 1)}: {error}"]
    t["state"] = PENDING
    return refresh(status, policy)


def finish_trial(status: dict[str, Any], index: int, records: Iterable[ResultRecord] = (),
                 error: str | None = None, policy: str = "continue") -> dict[str, Any]:
    """Store a trial's outcome; failed when ``error`` is given or any record failed."""
    status = copy.deepcopy(status)
    t = status["trials"][index]
    if t["state"] in DONE:
        return refresh(status, policy)  # idempotent: a result delivered twice changes nothing
    records = list(records)
    failed = [r for r in records if r.get("state") != "succeeded"]
    if error is None and not records:
        error = "the runner produced no result records"
    if error is None and failed:
        error = failed[0].get("error") or "a workload failed"
    t.update(state=FAILED if error else SUCCEEDED, finishedAt=now(), error=error,
             results=[to_status_result(r) for r in records])
    if _stopped(status, policy):
        for other in status["trials"]:
            if other["state"] == PENDING:
                other.update(state=SKIPPED, error="skipped: an earlier trial failed "
                                                  "(failurePolicy: stop)")
    return refresh(status, policy)


# A ``status.summary`` row: its keys and the ``bench.results.summarize`` fields they show.
SUMMARY = {**{k: k for k in ("workload", "framework", "workers", "median", "iqr", "speedup",
                             "efficiency", "quality", "state")},
           "memory": "rss_peak", "podMemory": "container_peak"}


def refresh(status: dict[str, Any], policy: str) -> dict[str, Any]:
    """Derive phase, progress, message, conditions and summary from the trials."""
    trials = status["trials"]
    done = sum(t["state"] in DONE for t in trials)
    failed = [t for t in trials if t["state"] == FAILED]
    running = any(t["state"] == RUNNING for t in trials)
    left = next_trial(status, policy) is not None
    if not running and not left and done:
        phase = FAILED if failed else SUCCEEDED
    elif running or done:
        phase = RUNNING
    else:
        phase = PENDING
    status["phase"] = phase
    status["progress"] = f"{done}/{len(trials)}"
    if failed:
        first = failed[0]
        status["message"] = (f"{len(failed)} trial(s) failed; first: {first['framework']} "
                             f"x{first['workers']}: {first.get('error')}")
    else:
        status["message"] = {PENDING: "waiting to start",
                             RUNNING: f"{done} of {len(trials)} trials done",
                             SUCCEEDED: "all trials succeeded"}[phase]
    current = next((t for t in trials if t["state"] == RUNNING), None)
    status["currentTrial"] = f"{current['framework']} x{current['workers']}" if current else ""
    records = [from_status_result(t["framework"], t["workers"], res)
               for t in trials for res in t.get("results", [])]
    status["summary"] = [{key: row.get(field) for key, field in SUMMARY.items()}
                         for row in summarize(records)] if records else []
    set_conditions(status, phase, "TrialFailed" if phase == FAILED else None)
    return status


CONDITION_TYPES = ("Running", "Succeeded", "Failed")
# Reasons are CamelCase (metav1.Condition: ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$).
_REASONS = {PENDING: "Pending", RUNNING: "TrialsRunning", SUCCEEDED: "AllTrialsSucceeded"}


def set_conditions(status: dict[str, Any], phase: str, failed_reason: str | None = None) -> None:
    """The three conditions for ``phase``; ``failed_reason`` names why a Failed phase failed
    (``TrialFailed``, ``InvalidSpec``, ...). The message is the status message."""
    reason = (failed_reason or "Failed") if phase == FAILED else _REASONS[phase]
    message = status.get("message") or ""
    generation = status.get("observedGeneration")
    true_type = {RUNNING: "Running", SUCCEEDED: "Succeeded", FAILED: "Failed"}.get(phase)
    for kind in CONDITION_TYPES:
        _condition(status, kind, kind == true_type, reason, message, generation)


def failed_status(reason: str, message: str, generation: int | None) -> dict[str, Any]:
    """A Benchmark refused before any trial was planned (``reason``: ``InvalidSpec``, ...)."""
    status: dict[str, Any] = {"phase": FAILED, "reason": reason, "message": message, "trials": [],
              "summary": [], "progress": "0/0", "currentTrial": "", "conditions": []}
    if generation is not None:
        status["observedGeneration"] = generation
    set_conditions(status, FAILED, reason)
    return status


def _condition(status: dict[str, Any], kind: str, true: bool, reason: str, message: str,
               generation: int | None = None) -> None:
    value = "True" if true else "False"
    conds = [c for c in status.get("conditions") or [] if c.get("type") in CONDITION_TYPES]
    old = next((c for c in conds if c["type"] == kind), None)
    new = {"type": kind, "status": value, "reason": reason, "message": message[:32768],
           # metav1.Condition: the time the status last changed, not the reason or message.
           "lastTransitionTime": now() if old is None or old.get("status") != value
           else old["lastTransitionTime"]}
    if generation is not None:
        new["observedGeneration"] = generation
    status["conditions"] = [new if c is old else c for c in conds] + ([] if old else [new])
