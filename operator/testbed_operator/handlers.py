"""Kopf handlers: a ``Benchmark`` becomes trials, each trial a KubeRay or Dask cluster plus a runner.

One **daemon per Benchmark** drives its trials one after the other.  It keeps no state of its
own: everything it needs to resume lives in ``Benchmark.status`` (the pure state machine in
:mod:`.trials`) and in the child objects, whose names are deterministic per trial.  So an
operator restarted at any point re-reads the status, adopts the objects that already exist
(a create answered *409* returns the existing object) and never starts a trial twice: a trial
whose runner was submitted (``trial.submittedAt``) but whose object has vanished fails instead
of being submitted again.

Per trial:

* ``ray`` / ``dask-on-ray``: a ``RayJob`` with an inline cluster; the runner is the job's
  driver on the head (K8sJobMode, not Ray Client).  Ready when ``jobDeploymentStatus`` leaves
  ``Initializing``; done at ``Complete``/``Failed`` (``jobStatus`` SUCCEEDED/FAILED/STOPPED).
* ``dask``: a ``DaskCluster`` (its components made at ``status.phase`` Pending or Running, as
  the Dask operator sets it), then a runner ``Job`` (done at its ``Complete``/``Failed``
  condition).
* With ``network_policy`` on, a ``NetworkPolicy`` is created before the cluster: the trial's
  pods accept connections only from each other (plus the configured metrics scrapers and, for
  Ray, the KubeRay operator on the dashboard port); it is deleted with the cluster.
* The runner publishes its records to the trial's ConfigMap (``bench.kube.channel``); the
  operator copies them into ``status.trials[i]``, optionally uploads them to
  ``spec.resultsUri`` (S3), deletes the ConfigMap and (unless ``keepClusters``) the cluster and the runner.
* Timeouts: ``spec.startupTimeoutSeconds`` for the cluster to become ready, and the run
  deadline (:func:`.manifests.run_deadline_seconds`) once it is; either fails the trial with
  the reason, and ``spec.failurePolicy`` decides whether the rest still run.

Trials of *all* Benchmarks share ``max_concurrent_trials`` slots (default 1) so that timings do
not disturb each other; waiting Benchmarks get their slot in arrival order.  After a restart,
trials that the status shows Running hold their slots before any new trial may start.

Deleting a Benchmark stops its daemon (which returns quietly, see :func:`register`) and the
``on.delete`` handler (behind Kopf's finalizer) deletes every child by label, so a running trial
stops.  Invalid specs set phase Failed with a message that names the field, once, without
retries; so does a namespace without the runner's ServiceAccount.

Pod-creation failures do not wait out the deadlines: while a trial waits, :class:`PodFailureWatch`
reads the trial's controllers' ``FailedCreate`` events (Job, ReplicaSet, KubeRay's
``FailedToCreate*Pod``) and its pods' stuck containers (``ImagePullBackOff``,
``CreateContainerConfigError``, ``CrashLoopBackOff``, ...) and fails the trial with them.

What happens is also posted as Events on the Benchmark (``kubectl describe``), each with its
own reason: ``InvalidSpec``, ``RunnerServiceAccountMissing``, ``TrialStarted``,
``ClusterReady``, ``ClusterNotReady``, ``TrialRetrying``, ``TrialSucceeded``, ``TrialFailed``,
``BenchmarkSucceeded``, ``BenchmarkFailed``, ``ReconcileError``.
"""
from __future__ import annotations

import asyncio
import collections
import copy
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable

import kopf

from bench.kube import channel, names
from bench.spec import BenchmarkSpec

from . import manifests, trials
from .crd import GROUP, PLURAL, VERSION
from .kube import Kube
from .metrics import OperatorMetrics
from .validation import BenchmarkInvalid, split_spec, validate_benchmark

log = logging.getLogger("testbed.operator")

FINALIZER = f"{GROUP}/finalizer"
RAYJOB = ("ray.io/v1", "RayJob")
DASKCLUSTER = ("kubernetes.dask.org/v1", "DaskCluster")
JOB = ("batch/v1", "Job")
CONFIGMAP = ("v1", "ConfigMap")
NETWORKPOLICY = ("networking.k8s.io/v1", "NetworkPolicy")
RAY_FRAMEWORKS = ("ray", "dask-on-ray")
# The KubeRay operator, wherever it runs (its Helm chart and its kustomize manifests both label
# the pod so): it polls the RayJob's status on the head's dashboard port.
KUBERAY_OPERATOR_PEER = {"namespaceSelector": {},
                         "podSelector": {"matchLabels": {"app.kubernetes.io/component": "kuberay-operator"}}}


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    default_image: str = "testbed-runner:latest"
    max_concurrent_trials: int = 1
    poll_seconds: float = 1.0
    run_grace_seconds: int = 120  # on top of timeoutSeconds x workloads, see _run_trial
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    # One NetworkPolicy per trial (manifests.build_networkpolicy_manifest). The peers are
    # NetworkPolicyPeer objects: who may scrape the metrics ports, who may reach the Ray
    # dashboard port.
    network_policy: bool = False
    network_policy_metrics_from: list[dict[str, Any]] = field(default_factory=list)
    network_policy_ray_dashboard_from: list[dict[str, Any]] = field(
        default_factory=lambda: [copy.deepcopy(KUBERAY_OPERATOR_PEER)])
    # Kopf's watch settings; tests shorten them.
    watch_server_timeout: float = 300
    error_backoffs: tuple[float, ...] = (1, 2, 5, 10, 20)
    # How often a waiting trial looks for pod-creation failures and stuck pods (events, pods).
    failure_check_seconds: float = 5.0


class TrialSlots:
    """At most ``limit`` trials at once across Benchmarks, granted in arrival order.

    ``running_elsewhere`` returns the Benchmarks whose status shows a Running trial (read from
    the API), so after a restart the resumed trials count before their daemons get here."""

    def __init__(self, limit: int, running_elsewhere: Callable[[], Awaitable[set[tuple[str, str]]]],
                 poll: float):
        self.limit = max(1, limit)
        self.held: set[tuple[str, str]] = set()
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._cond = asyncio.Condition()
        self._running_elsewhere = running_elsewhere
        self._poll = poll

    def hold(self, key: tuple[str, str]) -> None:
        """A resumed trial: it is running already, so it takes its slot unconditionally."""
        self.held.add(key)

    async def acquire(self, key: tuple[str, str]) -> None:
        async with self._cond:
            self._queue.append(key)
        try:
            while True:
                async with self._cond:
                    if self._queue[0] == key and len(self.held) < self.limit:
                        busy = self.held | (await self._running_elsewhere() - {key})
                        if len(busy) < self.limit:
                            self._queue.popleft()
                            self.held.add(key)
                            return
                    try:
                        await asyncio.wait_for(self._cond.wait(), self._poll)
                    except TimeoutError:
                        pass
        finally:
            async with self._cond:
                if key in self._queue:
                    self._queue.remove(key)
                self._cond.notify_all()

    async def release(self, key: tuple[str, str]) -> None:
        async with self._cond:
            self.held.discard(key)
            self._cond.notify_all()



def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _short(e: BaseException) -> str:
    body = getattr(e, "body", None)
    if body:
        try:
            return f"{getattr(e, 'status', '')} {json.loads(body).get('message', body)}"[:400]
        except (ValueError, AttributeError):
            pass
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]


class TrialOutcome:
    def __init__(self, records: list[dict[str, Any]] | None = None, error: str | None = None):
        self.records = records or []
        self.error = error


# Spec refusals written once, before planning, never retried.
REFUSED = ("InvalidSpec", "RunnerServiceAccountMissing")


def _ref(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": body.get("kind", "Benchmark"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta}}


def kopf_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the Benchmark through Kopf's poster (``kopf.event``: it sets
    ``reportingComponent`` from ``settings.posting``), or nothing outside Kopf's context."""
    try:
        kopf.event(_ref(body), type=type_, reason=reason, message=message[:1024])
    except LookupError:  # no operator context (the handlers driven directly, e.g. in a test)
        pass


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
            when = _ts(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")
                       or (e.get("metadata") or {}).get("creationTimestamp"))
            if self.since is not None and when is not None and when < self.since:
                continue  # an earlier attempt's
            found.append((when or 0.0, f"{inv.get('kind')} {inv.get('name')} could not create "
                                       f"its pod: {e.get('reason')}: {e.get('message') or ''}"))
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
            said.sort(key=lambda e: _ts(e.get("lastTimestamp") or e.get("firstTimestamp")) or 0.0)
            parts.append(f"pod {name} not Ready" + (f" ({said[-1].get('message')})" if said else ""))
        return "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")


class BenchmarkOperator:
    """What the handlers share: the API client, the config, the metrics and the slots."""

    def __init__(self, kube: Kube, config: OperatorConfig, metrics: OperatorMetrics | None = None):
        self.kube = kube
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.slots = TrialSlots(config.max_concurrent_trials, self._running_elsewhere,
                                config.poll_seconds)
        self.submissions: collections.Counter[str] = collections.Counter()  # for tests/benchmarks
        # Events on the Benchmark: (body, type, reason, message); Kopf's poster by default.
        self.post_event: Callable[[dict[str, Any], str, str, str], None] = kopf_event

    # -- helpers ---------------------------------------------------------------------------
    async def _running_elsewhere(self) -> set[tuple[str, str]]:
        out = set()
        for ns in self.config.namespaces or [None]:
            items = await self.kube.list_benchmarks(ns)
            for b in items:
                st = b.get("status") or {}
                if any(t.get("state") == trials.RUNNING for t in st.get("trials") or []):
                    out.add((b["metadata"]["namespace"], b["metadata"]["name"]))
        return out

    async def _save(self, ns: str, name: str, status: dict[str, Any]) -> None:
        await self.kube.patch_benchmark_status(ns, name, status)
        self.metrics.observe_status(ns, name, status)

    def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.post_event(body, type_, reason, message)

    async def _refuse(self, body: dict[str, Any], reason: str, message: str, logger: Any) -> None:
        """A Benchmark that cannot run as applied: Failed once with ``reason``, never retried."""
        meta = body["metadata"]
        logger.warning(f"refused ({reason}): {message}")
        await self._save(meta["namespace"], meta["name"],
                         trials.failed_status(reason, message, meta.get("generation")))
        self._event(body, "Warning", reason, message)

    async def _missing_runner_account(self, ns: str, logger: Any) -> str | None:
        """Why the trials' pods could not be created, if the runner's ServiceAccount is missing
        from ``ns``: the runner Job's pod and the Ray head name it, and the admission plugin
        refuses pods whose account does not exist (plugin/pkg/admission/serviceaccount)."""
        account = names.RUNNER_ACCOUNT
        try:
            if await self.kube.get("v1", "ServiceAccount", ns, account) is not None:
                return None
        except Exception as e:  # e.g. 403: cannot tell; the pods' failures will say it
            if getattr(e, "status", None) != 403:
                raise
            logger.warning(f"cannot check ServiceAccount {ns}/{account}: {_short(e)}")
            return None
        return (f'the runner\'s ServiceAccount "{account}" does not exist in namespace "{ns}", so '
                f"the runner and Ray head pods of its trials cannot be created. Install the "
                f'chart with "{ns}" in runnerNamespaces (or watchNamespaces), or create the '
                f"account with its Role and RoleBinding as charts/testbed/templates/rbac.yaml "
                f"does, then apply the Benchmark again")

    # -- the daemon ------------------------------------------------------------------------
    async def drive(self, ns: str, name: str, logger: logging.Logger | logging.LoggerAdapter,
                    body: dict[str, Any] | None = None) -> None:
        """``body``: the object as Kopf last saw it (saves a GET on the first pass; retries
        read it afresh)."""
        backoff = list(self.config.error_backoffs)
        attempt = 0
        ref = body or {"metadata": {"name": name, "namespace": ns}}
        posted = None
        while True:
            try:
                await self._drive_once(ns, name, logger, body)
                return
            except asyncio.CancelledError:
                raise
            except BenchmarkGone:
                return
            except Exception as e:  # an API error or a bug: count it, retry with backoff
                self.metrics.reconcile_error(ns, name)
                delay = backoff[min(attempt, len(backoff) - 1)]
                attempt += 1
                logger.error(f"reconcile error (retrying in {delay:g} s): {_short(e)}")
                if _short(e) != posted:  # one Event per distinct error, not one per retry
                    posted = _short(e)
                    self._event(ref, "Warning", "ReconcileError", f"retrying: {posted}")
                body = None
                await asyncio.sleep(delay)

    async def _drive_once(self, ns: str, name: str, logger: Any,
                           body: dict[str, Any] | None = None) -> None:
        if body is None:
            body = await self.kube.get_benchmark(ns, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        planned = bool(status.get("trials"))
        if status.get("phase") in (trials.SUCCEEDED, trials.FAILED) and (
                planned or status.get("reason") in REFUSED):
            self.metrics.observe_status(ns, name, status)
            await self._cleanup_done(body, status)
            return
        _, extra = split_spec(body)
        policy = extra.get("failurePolicy", "continue")
        try:
            quotas = [] if planned else await self.kube.list("v1", "ResourceQuota", ns)
            spec = validate_benchmark(body, quotas)
        except BenchmarkInvalid as e:
            await self._refuse(body, "InvalidSpec", str(e), logger)
            return
        if not planned:
            missing = await self._missing_runner_account(ns, logger)
            if missing:
                await self._refuse(body, "RunnerServiceAccountMissing", missing, logger)
                return
            status = trials.initial_status(spec)
            if body["metadata"].get("generation") is not None:
                status["observedGeneration"] = body["metadata"]["generation"]
            status = trials.refresh(status, policy)  # the conditions carry it too
            if self.slots.held:
                status["message"] = "waiting for a trial slot"
            await self._save(ns, name, status)
            logger.info(f"planned {len(status['trials'])} trial(s)")
        else:
            self.metrics.observe_status(ns, name, status)
            await self._cleanup_done(body, status)
        key = (ns, name)
        while (i := trials.next_trial(status, policy)) is not None:
            trial = status["trials"][i]
            if trial["state"] == trials.PENDING:
                if self.slots.held and status.get("message") != "waiting for a trial slot":
                    status["message"] = "waiting for a trial slot"
                    await self._save(ns, name, status)
                await self.slots.acquire(key)
                try:
                    status = trials.start_trial(status, i, policy)
                    await self._save(ns, name, status)
                except BaseException:
                    await self.slots.release(key)
                    raise
                started = status["trials"][i]
                logger.info(f"trial {started['framework']} x{started['workers']} started")
                self._event(body, "Normal", "TrialStarted",
                            f"trial {started['framework']} x{started['workers']} started "
                            f"(attempt {started.get('attempts', 1)})")
            else:
                self.slots.hold(key)
                logger.info(f"resuming trial {trial['framework']} x{trial['workers']}")
            try:
                status = await self._run_trial(body, spec, extra, status, i, logger)
            finally:
                await self.slots.release(key)
        status = trials.refresh(status, policy)
        await self._save(ns, name, status)
        logger.info(f"benchmark {status['phase']}: {status['message']}")
        if status["phase"] in (trials.SUCCEEDED, trials.FAILED):
            self._event(body, "Normal" if status["phase"] == trials.SUCCEEDED else "Warning",
                        f"Benchmark{status['phase']}", status["message"])

    # -- one trial -------------------------------------------------------------------------
    async def _run_trial(self, body: dict[str, Any], spec: BenchmarkSpec, extra: dict[str, Any],
                         status: dict[str, Any], i: int, logger: Any) -> dict[str, Any]:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        policy = extra.get("failurePolicy", "continue")
        trial = status["trials"][i]
        fw, workers = trial["framework"], trial["workers"]
        tname = names.trial_name(name, fw, workers)
        image = extra.get("image") or self.config.default_image
        startup_limit = float(extra.get("startupTimeoutSeconds", 600))
        run_limit = float(manifests.run_deadline_seconds(spec, self.config.run_grace_seconds))

        async def mark(**fields: Any) -> None:
            nonlocal status
            status["trials"][i].update(fields)
            await self._save(ns, name, status)

        if self.config.network_policy:
            # Before the cluster, so that its pods never run unprotected; a 409 (a resumed
            # trial) adopts the existing policy.
            policy = self._network_policy(body, fw, workers)
            _, created = await self.kube.create(policy)
            if created:
                self.submissions[f"{ns}/NetworkPolicy/{tname}"] += 1
        try:
            if fw in RAY_FRAMEWORKS:
                outcome = await self._ray_trial(body, spec, status, i, fw, workers, tname, image,
                                                startup_limit, run_limit, mark)
            else:
                outcome = await self._dask_trial(body, spec, status, i, workers, tname, image,
                                                 startup_limit, run_limit, mark)
        except TrialTimedOut as e:
            outcome = TrialOutcome(error=str(e))
            if not e.cluster_ready:
                self._event(body, "Warning", "ClusterNotReady", f"trial {fw} x{workers}: {e}")
        if outcome.error is None or not outcome.records:
            outcome = await self._collect(ns, tname, outcome)
        fresh = await self.kube.get_benchmark(ns, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            raise BenchmarkGone()  # deleted meanwhile: on.delete cleans up
        retries = int(extra.get("trialRetries", 0))
        if outcome.error and not outcome.records and status["trials"][i].get("attempts", 1) <= retries:
            # The attempt failed before producing results (runner killed, cluster lost,
            # timeout): remove what it left, wait until it is gone, then try again.
            await self._cleanup_trial(ns, name, fw, workers, keep=False)
            await self._wait_gone(ns, fw, tname)
            msg = (f"trial {fw} x{workers} attempt {status['trials'][i].get('attempts', 1)} "
                   f"failed, retrying ({retries} retries allowed): {outcome.error}")
            logger.warning(msg)
            self._event(body, "Warning", "TrialRetrying", msg)
            status = trials.retry_trial(status, i, outcome.error, policy)
            await self._save(ns, name, status)
            return status
        startup = trials.cluster_startup_seconds(status["trials"][i], outcome.records)
        if startup is not None:  # the runner's figure (see trials.cluster_startup_seconds)
            status["trials"][i]["clusterStartupSeconds"] = startup
        status = trials.finish_trial(status, i, outcome.records, outcome.error, policy)
        done = status["trials"][i]
        if extra.get("resultsUri"):
            done.update(await self._upload(extra["resultsUri"], ns, name, done, outcome.records))
        await self._save(ns, name, status)
        if done.get("error"):
            logger.warning(f"trial {fw} x{workers} {done['state']}: {done['error']}")
            self._event(body, "Warning", "TrialFailed", f"trial {fw} x{workers}: {done['error']}")
        else:
            logger.info(f"trial {fw} x{workers} {done['state']}")
            self._event(body, "Normal", "TrialSucceeded", f"trial {fw} x{workers} succeeded"
                        + _medians(done))
        await self._cleanup_trial(ns, name, fw, workers, manifests.spec_keep_clusters(body))
        return status

    def _network_policy(self, body: dict[str, Any], fw: str, workers: int) -> dict[str, Any]:
        return manifests.build_networkpolicy_manifest(
            body, fw, workers, self.config.network_policy_metrics_from,
            self.config.network_policy_ray_dashboard_from)

    async def _create_once(self, manifest: dict[str, Any], trial: dict[str, Any],
                           field_name: str, mark: Callable[..., Awaitable[None]],
                           applied_at: float | None = None) -> dict[str, Any] | None:
        """Create a trial's object exactly once: after ``field_name`` is recorded in the trial,
        a missing object means it was deleted (returns None), not that it must be created."""
        meta = manifest["metadata"]
        if trial.get(field_name):
            return await self.kube.get(manifest["apiVersion"], manifest["kind"], meta["namespace"],
                                       meta["name"])
        obj, created = await self.kube.create(manifest)
        if created:
            self.submissions[f"{meta['namespace']}/{manifest['kind']}/{meta['name']}"] += 1
            if applied_at is not None:  # the Benchmark's first cluster resource
                self.metrics.first_trial_started(max(0.0, time.time() - applied_at))
        await mark(**{field_name: trials.now(precise=True)})
        return obj

    async def _ray_trial(self, body, spec, status, i, fw, workers, tname, image, startup_limit,
                         run_limit, mark) -> TrialOutcome:
        manifest = manifests.build_rayjob_manifest(body, spec, workers, image, fw)
        trial = status["trials"][i]
        obj = await self._create_once(manifest, trial, "submittedAt", mark,
                                      _applied_at(body) if i == 0 else None)
        if trial.get("cluster") is None:
            await mark(cluster=f"RayJob/{tname}")
        ns = body["metadata"]["namespace"]
        # KubeRay names the RayJob's cluster <rayjob>-<5 random characters> (utils/util.go
        # GenerateRayClusterName) and its K8sJobMode submitter Job after the RayJob.
        watch = self._failure_watch(ns, tname, trial, [
            ("RayCluster", re.escape(tname) + "-[a-z0-9]{5}"), ("Job", re.escape(tname))])
        while True:
            if obj is None:
                return TrialOutcome(error=f"RayJob {tname} was deleted before the trial finished")
            st = obj.get("status") or {}
            watch.own("RayCluster", st.get("rayClusterName") or "")
            deploy, job = st.get("jobDeploymentStatus") or "", st.get("jobStatus") or ""
            if not trial.get("clusterReadyAt") and (deploy not in ("", "Initializing") or job):
                await self._mark_ready(body, trial, mark, f"RayJob {tname}")
            if deploy in ("Complete", "Failed", "ValidationFailed") or job in (
                    "SUCCEEDED", "FAILED", "STOPPED"):
                if job == "SUCCEEDED":
                    return TrialOutcome()
                reason = st.get("reason") or ""
                msg = st.get("message") or ""
                return TrialOutcome(error=f"RayJob {tname} ended with jobStatus={job or '?'}, "
                                          f"jobDeploymentStatus={deploy}"
                                          + (f" ({reason}: {msg})" if reason or msg else ""))
            obj = await self._poll_again(trial, startup_limit, run_limit, RAYJOB, ns, tname,
                                         f"RayJob {tname} (jobDeploymentStatus={deploy or 'unset'})",
                                         watch)

    async def _dask_trial(self, body, spec, status, i, workers, tname, image, startup_limit,
                          run_limit, mark) -> TrialOutcome:
        ns = body["metadata"]["namespace"]
        trial = status["trials"][i]
        cluster = await self._create_once(
            manifests.build_daskcluster_manifest(body, spec, workers, image), trial, "clusterCreatedAt",
            mark, _applied_at(body) if i == 0 else None)
        if trial.get("cluster") is None:
            await mark(cluster=f"DaskCluster/{tname}")
        # dask-kubernetes (operator/controller/controller.py) runs the scheduler as Deployment
        # <cluster>-scheduler and each worker as Deployment <cluster>-default-worker-<uuid>:
        # their pods come from ReplicaSets named <deployment>-<hash>.
        watch = self._failure_watch(ns, tname, trial, [
            ("ReplicaSet", re.escape(tname) + "-scheduler-[a-z0-9]+"),
            ("ReplicaSet", re.escape(tname) + "-default-worker-[0-9a-f]+-[a-z0-9]+"),
            ("Job", re.escape(names.runner_job_name(tname)))])
        while not trial.get("clusterReadyAt"):
            if cluster is None:
                return TrialOutcome(error=f"DaskCluster {tname} was deleted before the trial finished")
            phase = (cluster.get("status") or {}).get("phase") or ""
            # dask-kubernetes 2026.3.0 (operator/controller/controller.py) writes Pending once
            # the scheduler Deployment, its Service and the worker group exist, and Running
            # when the Service has a status; the two race (dask/dask-kubernetes#968) and the
            # cluster may stay Pending for good. Neither says a pod runs, and the runner waits
            # for the scheduler and the N workers itself: either phase means "the Service
            # exists, start the runner".
            if phase in ("Pending", "Running"):
                await self._mark_ready(body, trial, mark, f"DaskCluster {tname}")
                break
            if phase == "Error":
                return TrialOutcome(error=f"DaskCluster {tname} reports phase Error")
            cluster = await self._poll_again(trial, startup_limit, run_limit, DASKCLUSTER, ns, tname,
                                             f"DaskCluster {tname} (phase={phase or 'unset'})", watch)
        address = manifests.dask_scheduler_address(body, workers)
        job_manifest = manifests.build_runner_job_manifest(body, spec, "dask", workers, image, address)
        job = await self._create_once(job_manifest, trial, "submittedAt", mark)
        jname = job_manifest["metadata"]["name"]
        while True:
            if job is None:
                return TrialOutcome(error=f"runner Job {jname} was deleted before the trial finished")
            finished = job_finished(job)
            if finished is not None:
                ok, why = finished
                return TrialOutcome() if ok else TrialOutcome(error=f"runner Job {jname} failed: {why}")
            # DaskCluster Running comes before its pods (dask-kubernetes): the runner may wait
            # up to startupTimeoutSeconds for the scheduler and workers, then run.
            job = await self._poll_again(trial, startup_limit, startup_limit + run_limit, JOB, ns,
                                         jname, f"runner Job {jname}", watch)

    def _failure_watch(self, ns: str, tname: str, trial: dict[str, Any],
                       owners: list[tuple[str, str]]) -> PodFailureWatch:
        return PodFailureWatch(self.kube, ns, tname, _ts(trial.get("startedAt")),
                               self.config.failure_check_seconds, owners)

    async def _mark_ready(self, body: dict[str, Any], trial: dict[str, Any],
                          mark: Callable[..., Awaitable[None]], what: str) -> None:
        await _mark_ready(trial, mark)
        fw, workers = trial["framework"], trial["workers"]
        since = time.time() - (_ts(trial.get("startedAt")) or time.time())
        self._event(body, "Normal", "ClusterReady", f"trial {fw} x{workers}: {what} ready after "
                                                    f"{since:.3g} s")

    async def _poll_again(self, trial: dict[str, Any], startup_limit: float, run_limit: float,
                          kind: tuple[str, str], ns: str, name: str, what: str,
                          watch: PodFailureWatch | None = None) -> dict[str, Any] | None:
        """The object's next state, one poll interval later; raises :class:`TrialTimedOut`
        first if the trial is past its start-up or run deadline (from the status timestamps,
        so the deadlines survive restarts), or if ``watch`` finds pods that cannot start."""
        now = time.time()
        ready = _ts(trial.get("clusterReadyAt"))
        if ready is None:
            if now - _ts(trial["startedAt"]) > startup_limit:
                why = await watch.not_ready() if watch is not None else ""
                raise TrialTimedOut(f"timed out: {what} was not ready within startupTimeoutSeconds="
                                    f"{startup_limit:g}" + (f": {why}" if why else ""),
                                    cluster_ready=False)
        elif now - ready > run_limit:
            raise TrialTimedOut(f"timed out: {what} did not finish within {run_limit:g} s of the "
                                f"cluster being ready (timeoutSeconds per workload plus start-up grace)",
                                cluster_ready=True)
        if watch is not None:
            problem = await watch()
            if problem:
                raise TrialTimedOut(problem, cluster_ready=ready is not None)
        await asyncio.sleep(self.config.poll_seconds)
        return await self.kube.get(*kind, ns, name)

    async def _collect(self, ns: str, tname: str, outcome: TrialOutcome) -> TrialOutcome:
        """Read the runner's ConfigMap; its records (and its error) beat the Job's reason."""
        cm = await self.kube.get(*CONFIGMAP, ns, names.result_configmap_name(tname))
        if cm is None:
            if outcome.error:
                return TrialOutcome(error=outcome.error + " (the runner published no results)")
            return TrialOutcome(error=f"the runner finished but published no results (ConfigMap "
                                      f"{names.result_configmap_name(tname)} is missing)")
        payload = channel.read_payload(cm)
        records = payload.get("records") or []
        error = payload.get("error") if not records else None
        if error is None and not records:
            error = outcome.error or "the runner published no result records"
        elif error and outcome.error:
            error = f"{error} ({outcome.error})"
        return TrialOutcome(records, error)

    async def _upload(self, uri: str, ns: str, name: str, trial: dict[str, Any],
                      records: list[dict[str, Any]]) -> dict[str, Any]:
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        key = "/".join(p for p in (prefix.strip("/"), ns, name,
                                   f"{trial['framework']}-{trial['workers']}.json") if p)
        doc = json.dumps({"benchmark": name, "namespace": ns, "trial": trial, "records": records},
                         default=str, sort_keys=True).encode()

        def put() -> None:
            import boto3

            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=doc,
                                          ContentType="application/json")

        try:
            await asyncio.get_running_loop().run_in_executor(None, put)
            return {"resultsObject": f"s3://{bucket}/{key}"}
        except Exception as e:  # the results are in the status anyway; say why the copy failed
            return {"resultsUploadError": f"s3://{bucket}/{key}: {_short(e)}"}

    # -- cleanup ---------------------------------------------------------------------------
    async def _cleanup_trial(self, ns: str, name: str, fw: str, workers: int, keep: bool) -> None:
        tname = names.trial_name(name, fw, workers)
        await self.kube.delete(*CONFIGMAP, ns, names.result_configmap_name(tname))
        if keep:
            return
        if fw in RAY_FRAMEWORKS:
            await self.kube.delete(*RAYJOB, ns, tname)
        else:
            await self.kube.delete(*JOB, ns, names.runner_job_name(tname))
            await self.kube.delete(*DASKCLUSTER, ns, tname)
        if self.config.network_policy:  # last: it protected the cluster until now
            await self.kube.delete(*NETWORKPOLICY, ns, tname)

    async def _wait_gone(self, ns: str, fw: str, tname: str, timeout: float = 300) -> None:
        """Until the trial's objects are deleted, so that the next attempt creates new ones."""
        kinds = [RAYJOB] if fw in RAY_FRAMEWORKS else [JOB, DASKCLUSTER]
        if self.config.network_policy:
            kinds.append(NETWORKPOLICY)
        named = {JOB: names.runner_job_name(tname)}
        deadline = time.monotonic() + timeout
        for kind in kinds:
            while await self.kube.get(*kind, ns, named.get(kind, tname)) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind[1]} {named.get(kind, tname)} was not deleted within "
                                       f"{timeout:g} s; cannot retry the trial")
                await asyncio.sleep(self.config.poll_seconds)

    async def _cleanup_done(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        """After a restart: finish the cleanup of trials that ended just before it."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        keep = manifests.spec_keep_clusters(body)
        for t in status.get("trials") or []:
            if t["state"] in (trials.SUCCEEDED, trials.FAILED) and t.get("cluster"):
                await self._cleanup_trial(ns, name, t["framework"], t["workers"], keep)

    async def delete_children(self, ns: str, name: str) -> int:
        """Every object labelled with this Benchmark, whatever its trial's state."""
        selector = f"{names.BENCHMARK_LABEL}={names.label_value(name)}"
        n = 0
        kinds = [RAYJOB, ("ray.io/v1", "RayCluster"), JOB, DASKCLUSTER, CONFIGMAP]
        if self.config.network_policy:  # (with it off, the operator may not list them)
            kinds.append(NETWORKPOLICY)
        for api_version, kind in kinds:
            for obj in await self.kube.list(api_version, kind, ns, selector):
                n += await self.kube.delete(api_version, kind, ns, obj["metadata"]["name"])
        return n


class TrialTimedOut(Exception):
    """A trial passed its start-up or run deadline, or its pods cannot start; the message says
    which and why."""

    def __init__(self, message: str, cluster_ready: bool = False):
        super().__init__(message)
        self.cluster_ready = cluster_ready


async def _mark_ready(trial: dict[str, Any], mark: Callable[..., Awaitable[None]]) -> None:
    """The controller reports the cluster ready (RayJob past Initializing, DaskCluster
    Running): the run deadline counts from here. ``clusterStartupSeconds`` is the runner's
    figure, stored with its results."""
    await mark(clusterReadyAt=trials.now())


class BenchmarkGone(Exception):
    """The Benchmark was deleted while its trial ran; the delete handler cleans up."""


def _applied_at(body: dict[str, Any]) -> float | None:
    return _ts(body["metadata"].get("creationTimestamp"))


def job_finished(job: dict[str, Any]) -> tuple[bool, str] | None:
    """(succeeded, reason) once a batch/v1 Job has finished, else None."""
    st = job.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return True, ""
        if c.get("type") in ("Failed", "FailureTarget"):
            return False, f"{c.get('reason') or 'Failed'}: {c.get('message') or ''}".rstrip(": ")
    if st.get("succeeded"):
        return True, ""
    return None


def invalid_status(message: str, generation: int | None = None) -> dict[str, Any]:
    return trials.failed_status("InvalidSpec", message, generation)


def _medians(trial: dict[str, Any]) -> str:
    parts = [f"{r['workload']} median {r['median']:.3g} s" for r in trial.get("results") or []
             if r.get("median") is not None]
    return f" ({', '.join(parts)})" if parts else ""


# -- Kopf wiring ------------------------------------------------------------------------------
async def until_stopped(work: Awaitable[None], stopped: Any, logger: Any) -> None:
    """Run ``work`` until it ends or ``stopped`` (a ``kopf.DaemonStopped``) is set; then cancel
    it, wait for it and return normally."""
    task = asyncio.ensure_future(work)

    async def flag() -> None:
        await stopped.wait()

    stop = asyncio.ensure_future(flag())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
        results = await asyncio.gather(task, stop, return_exceptions=True)
    if task.cancelled() or isinstance(results[0], asyncio.CancelledError):
        logger.debug(f"stopped ({getattr(stopped, 'reason', None)})")
        return
    if isinstance(results[0], BaseException):
        raise results[0]


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach the handlers to ``registry``; they find the :class:`BenchmarkOperator` in
    ``memo.operator`` (``kopf.operator(memo=kopf.Memo(operator=...))``)."""
    res = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        # Events on the Benchmark come from BenchmarkOperator._event, each with its own reason
        # (kopf.event, kopf/_core/engines/posting.py). Log lines are not posted: Kopf would post
        # each with the reason "Logging" (K8sPoster in kopf/_core/engines/posting.py, posting.loggers).
        settings.posting.enabled = True
        settings.posting.loggers = False
        settings.posting.reporting_component = "testbed-operator"
        settings.watching.server_timeout = config.watch_server_timeout
        settings.watching.client_timeout = config.watch_server_timeout + 10
        settings.networking.error_backoffs = list(config.error_backoffs)
        settings.scanning.disabled = True

    # On a deletion (or the operator's exit) Kopf sets `stopped`, waits cancellation_backoff,
    # then cancels the task; a cancelled handler is logged as a warning "Daemon 'trials' is
    # cancelled. Will escalate." (kopf/_core/actions/execution.py), which Kopf also posts as
    # an Event. So the daemon watches the flag itself, stops its own work and returns: a
    # normal stop says nothing (kopf/_core/engines/daemons.py "has exited on request").
    @kopf.daemon(**res, id="trials", cancellation_backoff=5.0, cancellation_timeout=10.0,
                 initial_delay=0)
    async def run_trials(name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, logger: Any,
                         stopped: kopf.DaemonStopped, **_: Any) -> None:
        await until_stopped(memo.operator.drive(namespace, name, logger, copy.deepcopy(dict(body))),
                            stopped, logger)

    @kopf.on.delete(**res, id="cleanup")
    async def cleanup(name: str, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        n = await memo.operator.delete_children(namespace, name)
        memo.operator.metrics.forget(namespace, name)
        logger.info(f"deleted {n} child object(s)")

    @kopf.on.event(**res, id="metrics")
    def export(type: str, name: str, namespace: str, status: dict[str, Any], memo: kopf.Memo,
               **_: Any) -> None:
        if type == "DELETED":
            memo.operator.metrics.forget(namespace, name)
        elif status:
            memo.operator.metrics.observe_status(namespace, name, dict(status))

    @kopf.on.probe(registry=registry, id="trialsRunning")
    def running(memo: kopf.Memo, **_: Any) -> int:
        return len(memo.operator.slots.held)
