"""KubeRay: a ``RayJob`` with an inline cluster; the runner is the job's driver on the head.

Ready when ``jobDeploymentStatus`` leaves ``Initializing`` (or a ``jobStatus`` is set); done at
a terminal ``jobDeploymentStatus`` or ``jobStatus`` (KubeRay's apis/ray/v1/rayjob_types.go,
``IsJobTerminal`` and ``IsJobDeploymentTerminal``).
"""
from __future__ import annotations

import re
from typing import Any

from testbed_operator import manifests

from .base import Kind, ObjRef, Readiness, TrialContext, TrialOutcome

RAYJOB: Kind = ("ray.io/v1", "RayJob")
RAYCLUSTER: Kind = ("ray.io/v1", "RayCluster")

# rayjob_types.go JobStatus (the Ray job's own status) and JobDeploymentStatus (KubeRay's).
JOB_SUCCEEDED = "SUCCEEDED"
JOB_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEPLOYMENT_STARTING = ("", "Initializing")
DEPLOYMENT_TERMINAL = ("Complete", "Failed", "ValidationFailed")


def is_terminal(deployment: str, job: str) -> bool:
    """Whether a RayJob with these statuses has ended (either one terminal is enough)."""
    return deployment in DEPLOYMENT_TERMINAL or job in JOB_TERMINAL


def _statuses(obj: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    st = obj.get("status") or {}
    return st.get("jobDeploymentStatus") or "", st.get("jobStatus") or "", st


class RayDriver:
    created_field = "submittedAt"
    runner_waits_for_pods = False

    def manifests(self, ctx: TrialContext) -> list[dict[str, Any]]:
        return [manifests.build_rayjob_manifest(ctx.body, ctx.spec, ctx.workers, ctx.image,
                                                ctx.framework)]

    def children(self, tname: str) -> list[ObjRef]:
        return [(*RAYJOB, tname)]

    def owners(self, tname: str) -> list[tuple[str, str]]:
        # KubeRay names the RayJob's cluster <rayjob>-<5 random characters> (utils/util.go
        # GenerateRayClusterName) and its K8sJobMode submitter Job after the RayJob.
        return [("RayCluster", re.escape(tname) + "-[a-z0-9]{5}"), ("Job", re.escape(tname))]

    def owned(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        return [("RayCluster", (obj.get("status") or {}).get("rayClusterName") or "")]

    def state(self, kind: str, obj: dict[str, Any]) -> str | None:
        return f"jobDeploymentStatus={_statuses(obj)[0] or 'unset'}"

    def ready(self, obj: dict[str, Any]) -> Readiness:
        deploy, job, _ = _statuses(obj)
        return Readiness(deploy not in DEPLOYMENT_STARTING or bool(job))

    def finished(self, name: str, obj: dict[str, Any]) -> TrialOutcome | None:
        deploy, job, st = _statuses(obj)
        if not is_terminal(deploy, job):
            return None
        if job == JOB_SUCCEEDED:
            return TrialOutcome()
        reason, msg = st.get("reason") or "", st.get("message") or ""
        return TrialOutcome(error=f"RayJob {name} ended with jobStatus={job or '?'}, "
                                  f"jobDeploymentStatus={deploy}"
                                  + (f" ({reason}: {msg})" if reason or msg else ""))
