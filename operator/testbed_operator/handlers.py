"""Kopf wiring: the handlers that attach a :class:`.reconcile.BenchmarkOperator` to Kopf.

* a daemon per Benchmark (``trials``) runs :meth:`.reconcile.BenchmarkOperator.drive`;
* ``on.delete`` (behind Kopf's finalizer) deletes every child by label, so a running trial stops;
* ``on.event`` feeds the Benchmark's status to the metrics; a probe counts the running trials.

The handlers find the operator in ``memo.operator`` (``kopf.operator(memo=kopf.Memo(operator=
...))``); what they do is in :mod:`.reconcile`.
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable
from typing import Any

import kopf

from .config import OperatorConfig
from .crd import GROUP, PLURAL, VERSION

FINALIZER = f"{GROUP}/finalizer"


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


def _ns(namespace: str | None) -> str:
    """Benchmarks are namespaced: Kopf always passes their namespace."""
    if namespace is None:
        raise kopf.PermanentError("a Benchmark without a namespace")
    return namespace


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Attach the handlers to ``registry``; they find the :class:`.reconcile.BenchmarkOperator` in
    ``memo.operator`` (``kopf.operator(memo=kopf.Memo(operator=...))``)."""
    res: dict[str, Any] = {"group": GROUP, "version": VERSION, "plural": PLURAL,
                           "registry": registry}

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        # Events on the Benchmark come from BenchmarkOperator._event (.events.kopf_event), each
        # with its own reason (kopf.event, kopf/_core/engines/posting.py). Log lines are not
        # posted: Kopf would post each with the reason "Logging" (K8sPoster in
        # kopf/_core/engines/posting.py, posting.loggers).
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
    async def run_trials(name: str, namespace: str | None, body: kopf.Body, memo: Any,
                         logger: Any, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await until_stopped(memo.operator.drive(_ns(namespace), name, logger,
                                                copy.deepcopy(dict(body))), stopped, logger)

    @kopf.on.delete(**res, id="cleanup")
    async def cleanup(name: str, namespace: str | None, memo: Any, logger: Any, **_: Any) -> None:
        n = await memo.operator.delete_children(_ns(namespace), name)
        memo.operator.metrics.forget(namespace, name)
        logger.info(f"deleted {n} child object(s)")

    @kopf.on.event(**res, id="metrics")
    def export(type: str, name: str, namespace: str | None, status: kopf.Status, memo: Any,
               **_: Any) -> None:
        if type == "DELETED":
            memo.operator.metrics.forget(namespace, name)
        elif status:
            memo.operator.metrics.observe_status(namespace, name, dict(status))

    @kopf.on.probe(registry=registry, id="trialsRunning")
    def running(memo: Any, **_: Any) -> int:
        return len(memo.operator.slots.held)
