"""The Dask operator: a ``DaskCluster``, then a runner batch/v1 ``Job`` once it is up.

The cluster counts as ready at ``status.phase`` Pending or Running (as the Dask operator sets
it); the runner is done at its Job's terminal condition (:func:`job_finished`).
"""
from __future__ import annotations

import re
from typing import Any

from bench.kube.names import runner_job_name
from testbed_operator import manifests

from .base import JOB, Kind, ObjRef, Readiness, TrialContext, TrialOutcome

DASKCLUSTER: Kind = ("kubernetes.dask.org/v1", "DaskCluster")

# dask-kubernetes 2026.3.0 (operator/controller/controller.py) writes Pending once the
# scheduler Deployment, its Service and the worker group exist, and Running when the Service
# has a status; the two race (dask/dask-kubernetes#968) and the cluster may stay Pending for
# good. Neither says a pod runs, and the runner waits for the scheduler and the N workers
# itself: either phase means "the Service exists, start the runner".
PHASES_READY = ("Pending", "Running")
PHASE_ERROR = "Error"

# batch/v1 Job conditions that end it (pkg/controller/job/job_controller.go): the terminal
# ones and the targets the controller sets first (Kubernetes >= 1.31).
JOB_SUCCEEDED_CONDITIONS = ("Complete", "SuccessCriteriaMet")
JOB_FAILED_CONDITIONS = ("Failed", "FailureTarget")


def job_finished(job: dict[str, Any]) -> tuple[bool, str] | None:
    """(succeeded, reason) once a batch/v1 Job has finished, else None."""
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in JOB_SUCCEEDED_CONDITIONS:
            return True, ""
        if c.get("type") in JOB_FAILED_CONDITIONS:
            return False, f"{c.get('reason') or 'Failed'}: {c.get('message') or ''}".rstrip(": ")
    if st.get("succeeded"):
        return True, ""
    return None




class DaskDriver:
    created_field = "clusterCreatedAt"
    runner_waits_for_pods = True

    def manifests(self, ctx: TrialContext) -> list[dict[str, Any]]:
        address = manifests.dask_scheduler_address(ctx.body, ctx.workers)
        return [manifests.build_daskcluster_manifest(ctx.body, ctx.spec, ctx.workers, ctx.image),
                manifests.build_runner_job_manifest(ctx.body, ctx.spec, "dask", ctx.workers,
                                                    ctx.image, address)]

    def children(self, tname: str) -> list[ObjRef]:
        return [(*JOB, runner_job_name(tname)), (*DASKCLUSTER, tname)]

    def owners(self, tname: str) -> list[tuple[str, str]]:
        # dask-kubernetes (operator/controller/controller.py) runs the scheduler as Deployment
        # <cluster>-scheduler and each worker as Deployment <cluster>-default-worker-<uuid>:
        # their pods come from ReplicaSets named <deployment>-<hash>.
        return [("ReplicaSet", re.escape(tname) + "-scheduler-[a-z0-9]+"),
                ("ReplicaSet", re.escape(tname) + "-default-worker-[0-9a-f]+-[a-z0-9]+"),
                ("Job", re.escape(runner_job_name(tname)))]

    def owned(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def state(self, kind: str, obj: dict[str, Any]) -> str | None:
        if kind != DASKCLUSTER[1]:
            return None
        return f"phase={(obj.get('status') or {}).get('phase') or 'unset'}"

    def ready(self, obj: dict[str, Any]) -> Readiness:
        phase = (obj.get("status") or {}).get("phase") or ""
        if phase == PHASE_ERROR:
            name = obj["metadata"]["name"]
            return Readiness(False, f"DaskCluster {name} reports phase Error")
        return Readiness(phase in PHASES_READY)

    def finished(self, name: str, obj: dict[str, Any]) -> TrialOutcome | None:
        done = job_finished(obj)
        if done is None:
            return None
        ok, why = done
        return TrialOutcome() if ok else TrialOutcome(error=f"runner Job {name} failed: {why}")
