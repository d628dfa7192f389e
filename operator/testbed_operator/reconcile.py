"""The reconcile loop: a ``Benchmark`` becomes trials, each trial a driver's objects plus a runner.

One **daemon per Benchmark** (:mod:`.handlers`) calls :meth:`BenchmarkOperator.drive`, which
drives its trials one after the other. It keeps no state of its own: everything it needs to
resume lives in ``Benchmark.status`` (the pure state machine in :mod:`.trials`) and in the
child objects, whose names are deterministic per trial. So an operator restarted at any point
re-reads the status, adopts the objects that already exist (a create answered *409* returns
the existing object) and never starts a trial twice: a trial whose runner was submitted
(``trial.submittedAt``) but whose object has vanished fails instead of being submitted again.

A trial attempt is a sequence of **steps** (:meth:`BenchmarkOperator._step`), each one switch
on the trial's :class:`Stage` (read from its status fields, like KubeRay's RayJob controller
switches on ``jobDeploymentStatus``): submit the cluster, wait for it to be ready, run the
runner. A step collects its changes to the trial in memory and the loop writes the status
once at its end. The framework's objects come from its driver (:mod:`.drivers`: a KubeRay
``RayJob``, or a ``DaskCluster`` and a runner ``Job``).

* With ``network_policy`` on, a ``NetworkPolicy`` is created before the cluster: the trial's
  pods accept connections only from each other (plus the configured metrics scrapers and, for
  Ray, the KubeRay operator on the dashboard port); it is deleted with the cluster.
* The runner publishes its records to the trial's ConfigMap; the operator copies them into
  ``status.trials[i]``, optionally uploads them to ``spec.resultsUri`` (S3) (:mod:`.sink`),
  deletes the ConfigMap and (unless ``keepClusters``) the cluster and the runner.
* Timeouts: ``spec.startupTimeoutSeconds`` for the cluster to become ready, and the run
  deadline (:func:`.manifests.run_deadline_seconds`) once it is; either fails the trial with
  the reason, and ``spec.failurePolicy`` decides whether the rest still run.

Trials of *all* Benchmarks share ``max_concurrent_trials`` slots (:mod:`.slots`). Invalid
specs set phase Failed with a message that names the field, once, without retries; so does a
namespace without the runner's ServiceAccount. Pod-creation failures do not wait out the
deadlines (:class:`.podwatch.PodFailureWatch`).

What happens is also posted as Events on the Benchmark (``kubectl describe``), each with its
own reason: ``InvalidSpec``, ``RunnerServiceAccountMissing``, ``TrialStarted``,
``ClusterReady``, ``ClusterNotReady``, ``TrialRetrying``, ``TrialSucceeded``, ``TrialFailed``,
``BenchmarkSucceeded``, ``BenchmarkFailed``, ``ReconcileError``.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from bench.kube import names
from bench.operator_spec import OperatorSpec
from bench.spec import BenchmarkSpec

from . import manifests, sink, trials
from ._util import short, ts
from .attempt import Stage, TrialRun, stage_of
from .cleanup import Cleanup
from .config import OperatorConfig
from .drivers import TrialContext, TrialOutcome, TrialTimedOut, driver_for, label
from .events import kopf_event
from .kube import Kube
from .metrics import OperatorMetrics
from .podwatch import PodFailureWatch, missing_runner_account
from .slots import TrialSlots
from .validation import BenchmarkInvalid, split_spec, validate_benchmark

log = logging.getLogger("testbed.operator")

# Spec refusals written once, before planning, never retried.
REFUSED = ("InvalidSpec", "RunnerServiceAccountMissing")
WAITING = "waiting for a trial slot"

Event = Callable[[dict[str, Any], str, str, str], None]  # (body, type, reason, message)


class BenchmarkGone(Exception):
    """The Benchmark was deleted while its trial ran; the delete handler cleans up."""


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
        self.post_event: Event = kopf_event
        self.cleanup = Cleanup(kube, config)

    # -- helpers ---------------------------------------------------------------------------
    async def _running_elsewhere(self) -> set[tuple[str, str]]:
        out = set()
        watched: list[str | None] = [*self.config.namespaces] or [None]
        for ns in watched:
            # (Any: kube.py's "list[...]" annotations name its own Kube.list for mypy)
            benchmarks: Any = await self.kube.list_benchmarks(ns)
            for b in benchmarks:
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

    async def delete_children(self, ns: str, name: str) -> int:
        return await self.cleanup.delete_children(ns, name)

    # -- the daemon ------------------------------------------------------------------------
    async def drive(self, ns: str, name: str, logger: logging.Logger | logging.LoggerAdapter[Any],
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
                logger.error(f"reconcile error (retrying in {delay:g} s): {short(e)}")
                if short(e) != posted:  # one Event per distinct error, not one per retry
                    posted = short(e)
                    self._event(ref, "Warning", "ReconcileError", f"retrying: {posted}")
                body = None
                await asyncio.sleep(delay)

    async def _plan(self, body: dict[str, Any], status: dict[str, Any], logger: Any
                    ) -> tuple[BenchmarkSpec, dict[str, Any]] | None:
        """The checked spec and the status to go on from (planned now if it was not), or None
        when the Benchmark is refused."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        planned = bool(status.get("trials"))
        policy = OperatorSpec.of(split_spec(body)[1]).failure_policy
        try:
            quotas = [] if planned else await self.kube.list("v1", "ResourceQuota", ns)
            spec = validate_benchmark(body, quotas)
        except BenchmarkInvalid as e:
            await self._refuse(body, "InvalidSpec", str(e), logger)
            return None
        if planned:
            self.metrics.observe_status(ns, name, status)
            await self.cleanup.done_trials(body, status)
            return spec, status
        missing = await missing_runner_account(self.kube, ns, logger)
        if missing:
            await self._refuse(body, "RunnerServiceAccountMissing", missing, logger)
            return None
        status = trials.initial_status(spec)
        if body["metadata"].get("generation") is not None:
            status["observedGeneration"] = body["metadata"]["generation"]
        status = trials.refresh(status, policy)  # the conditions carry it too
        if self.slots.held:
            status["message"] = WAITING
        await self._save(ns, name, status)
        logger.info(f"planned {len(status['trials'])} trial(s)")
        return spec, status

    async def _drive_once(self, ns: str, name: str, logger: Any,
                          body: dict[str, Any] | None = None) -> None:
        if body is None:
            body = await self.kube.get_benchmark(ns, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        if status.get("phase") in (trials.SUCCEEDED, trials.FAILED) and (
                status.get("trials") or status.get("reason") in REFUSED):
            self.metrics.observe_status(ns, name, status)
            await self.cleanup.done_trials(body, status)
            return
        plan = await self._plan(body, status, logger)
        if plan is None:
            return
        spec, status = plan
        extra = OperatorSpec.of(split_spec(body)[1])
        policy = extra.failure_policy
        key = (ns, name)
        while (i := trials.next_trial(status, policy)) is not None:
            if status["trials"][i]["state"] == trials.PENDING:
                status = await self._start_trial(body, status, i, policy, logger)
            else:
                self.slots.hold(key)
                trial = status["trials"][i]
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

    async def _start_trial(self, body: dict[str, Any], status: dict[str, Any], i: int,
                           policy: str, logger: Any) -> dict[str, Any]:
        """Wait for a slot, then mark trial ``i`` Running (holding the slot)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        key = (ns, name)
        if self.slots.held and status.get("message") != WAITING:
            status["message"] = WAITING
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
        return status

    # -- one trial -------------------------------------------------------------------------
    async def _run_trial(self, body: dict[str, Any], spec: BenchmarkSpec, extra: OperatorSpec,
                         status: dict[str, Any], i: int, logger: Any) -> dict[str, Any]:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        trial = status["trials"][i]
        fw, workers = trial["framework"], trial["workers"]
        ctx = TrialContext(body, spec, fw, workers, extra.image or self.config.default_image)
        tname, driver = ctx.tname, driver_for(fw)
        run = TrialRun(ctx, driver, driver.manifests(ctx), status, i,
                       startup_limit=float(extra.startup_timeout_seconds),
                       run_limit=float(manifests.run_deadline_seconds(
                           spec, self.config.run_grace_seconds)),
                       watch=PodFailureWatch(self.kube, ns, tname, ts(trial.get("startedAt")),
                                             self.config.failure_check_seconds,
                                             driver.owners(tname)))
        if self.config.network_policy:
            # Before the cluster, so that its pods never run unprotected; a 409 (a resumed
            # trial) adopts the existing policy.
            _, created = await self.kube.create(manifests.build_networkpolicy_manifest(
                body, fw, workers, self.config.network_policy_metrics_from,
                self.config.network_policy_ray_dashboard_from))
            if created:
                self.submissions[f"{ns}/NetworkPolicy/{tname}"] += 1
        try:
            outcome = await self._attempt(run)
        except TrialTimedOut as e:
            outcome = TrialOutcome(error=str(e))
            if not e.cluster_ready:
                self._event(body, "Warning", "ClusterNotReady", f"trial {fw} x{workers}: {e}")
        if outcome.error is None or not outcome.records:
            outcome = await sink.collect(self.kube, ns, tname, outcome)
        fresh = await self.kube.get_benchmark(ns, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            raise BenchmarkGone()  # deleted meanwhile: on.delete cleans up
        return await self._end_attempt(body, extra, status, i, outcome, logger)

    async def _end_attempt(self, body: dict[str, Any], extra: OperatorSpec,
                           status: dict[str, Any], i: int, outcome: TrialOutcome,
                           logger: Any) -> dict[str, Any]:
        """Retry the trial, or finish it with its outcome; then clean up after it."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        policy, retries = extra.failure_policy, int(extra.trial_retries)
        fw, workers = status["trials"][i]["framework"], status["trials"][i]["workers"]
        attempts = status["trials"][i].get("attempts", 1)
        if outcome.error and not outcome.records and attempts <= retries:
            # The attempt failed before producing results (runner killed, cluster lost,
            # timeout): remove what it left, wait until it is gone, then try again.
            await self.cleanup.trial(ns, name, fw, workers, keep=False)
            await self.cleanup.wait_gone(ns, fw, names.trial_name(name, fw, workers))
            msg = (f"trial {fw} x{workers} attempt {attempts} failed, retrying ({retries} "
                   f"retries allowed): {outcome.error}")
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
        if extra.results_uri:
            done.update(await sink.upload(extra.results_uri, ns, name, done, outcome.records))
        await self._save(ns, name, status)
        if done.get("error"):
            logger.warning(f"trial {fw} x{workers} {done['state']}: {done['error']}")
            self._event(body, "Warning", "TrialFailed", f"trial {fw} x{workers}: {done['error']}")
        else:
            logger.info(f"trial {fw} x{workers} {done['state']}")
            self._event(body, "Normal", "TrialSucceeded", f"trial {fw} x{workers} succeeded"
                        + _medians(done))
        await self.cleanup.trial(ns, name, fw, workers, manifests.spec_keep_clusters(body))
        return status

    async def _attempt(self, run: TrialRun) -> TrialOutcome:
        """Step until the attempt has an outcome; the status is written once per step."""
        ns, name = run.ctx.namespace, run.ctx.body["metadata"]["name"]

        async def write() -> None:  # the step's one status write
            if run.dirty:
                run.dirty = False
                await self._save(ns, name, run.status)

        while True:
            try:
                outcome, wait = await self._step(run)
            except TrialTimedOut:  # an outcome too: what the step marked counts
                await write()
                raise
            await write()
            if outcome is not None:
                return outcome
            if wait:
                await asyncio.sleep(self.config.poll_seconds)

    async def _step(self, run: TrialRun) -> tuple[TrialOutcome | None, bool]:
        """One step of an attempt: (its outcome once it has one, whether to wait a poll
        interval before the next step). Changes to the trial are ``run.mark``-ed, not saved."""
        trial, driver = run.trial, run.driver
        cluster, runner = run.objects[0], run.objects[-1]
        if trial.get(driver.created_field) and trial.get("cluster") is None:
            run.mark(cluster=f"{cluster['kind']}/{cluster['metadata']['name']}")
        match stage_of(trial, driver):
            case Stage.SUBMIT:
                await self._create(run, cluster, driver.created_field, first=run.index == 0)
                run.mark(cluster=f"{cluster['kind']}/{cluster['metadata']['name']}")
                return None, False
            case Stage.STARTING:
                obj = await self._get(cluster)
                if obj is None:
                    return _deleted(cluster), False
                self._own(run, obj)
                readiness = driver.ready(obj)
                if readiness.error:
                    return TrialOutcome(error=readiness.error), False
                if readiness.ready:
                    self._mark_ready(run, label(cluster))
                    return None, False
                await self._check(run, self._what(run, cluster, obj))
                return None, True
            case Stage.RUNNING:
                if runner is not cluster and not trial.get("submittedAt"):
                    obj = await self._create(run, runner, "submittedAt")
                else:
                    obj = await self._get(runner)
                if obj is None:
                    return _deleted(runner), False
                self._own(run, obj)
                outcome = driver.finished(runner["metadata"]["name"], obj)
                if outcome is not None:
                    return outcome, False
                await self._check(run, self._what(run, runner, obj))
                return None, True
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        return await self.kube.get(manifest["apiVersion"], manifest["kind"], meta["namespace"],
                                   meta["name"])

    async def _create(self, run: TrialRun, manifest: dict[str, Any], field_name: str,
                      first: bool = False) -> dict[str, Any] | None:
        """Create a trial's object (a 409 adopts the existing one) and record ``field_name``:
        once recorded, a missing object means it was deleted, not that it must be created."""
        meta = manifest["metadata"]
        obj, created = await self.kube.create(manifest)
        if created:
            self.submissions[f"{meta['namespace']}/{manifest['kind']}/{meta['name']}"] += 1
            applied_at = ts(run.ctx.body["metadata"].get("creationTimestamp")) if first else None
            if applied_at is not None:  # the Benchmark's first cluster resource
                self.metrics.first_trial_started(max(0.0, time.time() - applied_at))
        run.mark(**{field_name: trials.now(precise=True)})
        return obj

    def _own(self, run: TrialRun, obj: dict[str, Any]) -> None:
        for kind, name in run.driver.owned(obj):
            run.watch.own(kind, name)

    def _mark_ready(self, run: TrialRun, what: str) -> None:
        """The controller reports the cluster ready: the run deadline counts from here.
        ``clusterStartupSeconds`` is the runner's figure, stored with its results."""
        run.mark(clusterReadyAt=trials.now())
        since = time.time() - (ts(run.trial.get("startedAt")) or time.time())
        self._event(run.ctx.body, "Normal", "ClusterReady",
                    f"trial {run.ctx.framework} x{run.ctx.workers}: {what} ready after "
                    f"{since:.3g} s")

    @staticmethod
    def _what(run: TrialRun, manifest: dict[str, Any], obj: dict[str, Any]) -> str:
        state = run.driver.state(manifest["kind"], obj)
        return label(manifest) + (f" ({state})" if state else "")

    async def _check(self, run: TrialRun, what: str) -> None:
        """Raise :class:`TrialTimedOut` if the trial is past its start-up or run deadline (from
        the status timestamps, so the deadlines survive restarts), or if its pods cannot
        start."""
        now = time.time()
        ready = ts(run.trial.get("clusterReadyAt"))
        run_limit = run.run_limit + (run.startup_limit if run.driver.runner_waits_for_pods else 0)
        if ready is None:
            if now - (ts(run.trial["startedAt"]) or now) > run.startup_limit:
                why = await run.watch.not_ready()
                raise TrialTimedOut(f"timed out: {what} was not ready within "
                                    f"startupTimeoutSeconds={run.startup_limit:g}"
                                    + (f": {why}" if why else ""), cluster_ready=False)
        elif now - ready > run_limit:
            raise TrialTimedOut(f"timed out: {what} did not finish within {run_limit:g} s of the "
                                f"cluster being ready (timeoutSeconds per workload plus start-up "
                                f"grace)", cluster_ready=True)
        problem = await run.watch()
        if problem:
            raise TrialTimedOut(problem, cluster_ready=ready is not None)


def _deleted(manifest: dict[str, Any]) -> TrialOutcome:
    return TrialOutcome(error=f"{label(manifest)} was deleted before the trial finished")


def _medians(trial: dict[str, Any]) -> str:
    parts = [f"{r['workload']} median {r['median']:.3g} s" for r in trial.get("results") or []
             if r.get("median") is not None]
    return f" ({', '.join(parts)})" if parts else ""

