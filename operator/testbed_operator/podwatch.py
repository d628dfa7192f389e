"""Why a waiting trial's pods cannot start or are not Ready: read from Events and pod status."""
from __future__ import annotations

import re
import time
from typing import Any

from bench.kube import names

from ._util import short, ts
from .kube import Kube


class PodFailureWatch:
    """Why a trial's pods cannot start, if they cannot: read at most every ``every`` seconds.

    * ``FailedCreate`` events of the trial's own controllers: the runner Job (batch Job
      controller, pkg/controller/job/job_controller.go), the Dask operator's Deployments'
      ReplicaSets (pkg/controller/replicaset), and KubeRay's ``FailedToCreateHeadPod`` /
      ``FailedToCreateWorkerPod`` on the RayCluster (ray-operator/controllers/ray/utils/
      constant.go, raycluster_controller.go ``createHeadPod``/``createWorkerPod``), e.g.
      ``serviceaccount "testbed-runner" not found`` or a quota refusal. Only events not older
      than the trial's attempt count.
    * Containers of the trial's pods (``testbed.dev/trial=<trial>``) waiting for a reason that
      does not resolve by itself: the kubelet's ``ImagePullBackOff``, ``ErrImageNeverPull``,
      ``InvalidImageName`` (pkg/kubelet/images/types.go), ``CreateContainerConfigError`` (a
      missing Secret or ConfigMap key, pkg/kubelet/kuberuntime/kuberuntime_container.go) and
      ``CrashLoopBackOff`` (pkg/kubelet/kuberuntime/kuberuntime_manager.go).
    """

    CREATE_FAILURES = ("FailedCreate", "FailedToCreateHeadPod", "FailedToCreateWorkerPod")
    STUCK = ("ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
             "CreateContainerConfigError", "CrashLoopBackOff")

    def __init__(self, kube: Kube, ns: str, tname: str, since: float | None, every: float,
                 owners: list[tuple[str, str]]):
        self.kube, self.ns, self.tname, self.since, self.every = kube, ns, tname, since, every
        self.owners = list(owners)  # (kind, full-match regex of the object's name)
        self._next = 0.0

    def own(self, kind: str, name: str) -> None:
        if name and (kind, re.escape(name)) not in self.owners:
            self.owners.append((kind, re.escape(name)))

    async def __call__(self) -> str | None:
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.every
        events = await self.kube.list("v1", "Event", self.ns, fields="type=Warning")
        found = []
        for e in events:
            inv = e.get("involvedObject") or {}
            if e.get("reason") not in self.CREATE_FAILURES or not any(
                    inv.get("kind") == kind and re.fullmatch(rx, inv.get("name") or "")
                    for kind, rx in self.owners):
                continue
            when = ts(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
                       or (e.get("metadata") or {}).get("creationTimestamp"))
            if self.since is not None and when is not None and when < self.since:
                continue  # an earlier attempt's
            found.append((when or 0.0, (f"{inv.get('kind')} {inv.get('name')} could not create "
                                        f"its pod: {e.get('reason')}: {e.get('message') or ''}")))
        if found:
            return max(found)[1].rstrip(": ")
        for pod in await self.kube.list("v1", "Pod", self.ns,
                                        f"{names.TRIAL_LABEL}={self.tname}"):
            st = pod.get("status") or {}
            for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in self.STUCK:
                    return (f"pod {pod['metadata']['name']} cannot run container {cs.get('name')}: "
                            f"{waiting['reason']}: {waiting.get('message') or ''}").rstrip(": ")
        return None

    async def not_ready(self) -> str:
        """Why the trial's pods are not Ready, for a start-up timeout's message: each pod whose
        ``Ready`` condition is not True, with the scheduler's reason when it was never placed
        (its ``PodScheduled`` condition False, e.g. ``Unschedulable: 0/1 nodes are available: 1
        Insufficient cpu``; pkg/scheduler/schedule_one.go, ``handleSchedulingFailure``) or else
        the kubelet's latest ``Unhealthy`` Event on it (pkg/kubelet/prober/prober.go:
        "Readiness probe failed: ..."). Empty if none."""
        pods = [p for p in await self.kube.list("v1", "Pod", self.ns,
                                                f"{names.TRIAL_LABEL}={self.tname}")
                if not any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in (p.get("status") or {}).get("conditions") or [])]
        if not pods:
            return ""
        events = await self.kube.list("v1", "Event", self.ns, fields="type=Warning")
        parts = []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            name = pod["metadata"]["name"]
            unscheduled = next((c for c in (pod.get("status") or {}).get("conditions") or []
                                if c.get("type") == "PodScheduled" and c.get("status") == "False"),
                               None)
            if unscheduled is not None:
                why = ": ".join(x for x in (unscheduled.get("reason"), unscheduled.get("message"))
                                if x)
                parts.append(f"pod {name} not scheduled" + (f" ({why.strip()})" if why else ""))
                continue
            said = [e for e in events if e.get("reason") == "Unhealthy"
                    and (e.get("involvedObject") or {}).get("kind") == "Pod"
                    and (e.get("involvedObject") or {}).get("name") == name]
            said.sort(key=lambda e: ts(e.get("lastTimestamp") or e.get("firstTimestamp")) or 0.0)
            parts.append(f"pod {name} not Ready"
                         + (f" ({said[-1].get('message')})" if said else ""))
        return "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")


async def missing_runner_account(kube: Kube, ns: str, logger: Any) -> str | None:
    """Why the trials' pods could not be created, if the runner's ServiceAccount is missing
    from ``ns``: the runner Job's pod and the Ray head name it, and the admission plugin
    refuses pods whose account does not exist (plugin/pkg/admission/serviceaccount)."""
    account = names.RUNNER_ACCOUNT
    try:
        if await kube.get("v1", "ServiceAccount", ns, account) is not None:
            return None
    except Exception as e:  # e.g. 403: cannot tell; the pods' failures will say it
        if getattr(e, "status", None) != 403:
            raise
        logger.warning(f"cannot check ServiceAccount {ns}/{account}: {short(e)}")
        return None
    return (f'the runner\'s ServiceAccount "{account}" does not exist in namespace "{ns}", so '
            f"the runner and Ray head pods of its trials cannot be created. Install the "
            f'chart with "{ns}" in runnerNamespaces (or watchNamespaces), or create the '
            f"account with its Role and RoleBinding as charts/testbed/templates/rbac.yaml "
            f"does, then apply the Benchmark again")
