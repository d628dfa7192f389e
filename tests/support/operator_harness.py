"""Run the real operator in-process against the emulator (shared by tests and benchmarks)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf

from bench.kube.client import api_client
from testbed_operator.config import OperatorConfig
from testbed_operator.kube import Kube
from testbed_operator.main import run
from testbed_operator.reconcile import BenchmarkOperator

from support import free_port  # also re-exported: the operator tests import it here

BENCHMARKS = "/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks"


class RunningOperator:
    """The operator in its own thread and event loop, as ``kopf.testing.KopfRunner`` does:
    when ``kopf.operator`` exits it cancels every task created in its loop since it started,
    which in a shared loop would include the emulator's connection handlers."""

    def __init__(self, op: BenchmarkOperator, url: str, namespace: str):
        self.op = op
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        self._stop, self._ready = threading.Event(), threading.Event()
        self._login = kopf.ConnectionInfo(server=url, default_namespace=namespace)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(run(self.op, liveness=self.liveness, login=self._login,
                            stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self._ready.set()

    async def start(self) -> None:
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, 30) or self.error:
            raise RuntimeError(f"the operator did not start: {self.error!r}")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 60)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop within 60 s")
        if self.error:
            raise self.error

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()


@contextlib.asynccontextmanager
async def running_operator(url: str, namespace: str,
                           **config: Any) -> AsyncIterator[RunningOperator]:
    defaults = {"namespaces": [namespace], "poll_seconds": 0.2, "watch_server_timeout": 10,
                "error_backoffs": (0.2, 0.5, 1.0), "metrics_port": free_port()}
    cfg = OperatorConfig(**{**defaults, **config})
    op = BenchmarkOperator(Kube(api_client(url)), cfg)
    handle = RunningOperator(op, url, namespace)
    try:
        await handle.start()
        yield handle
    finally:
        if not handle.stopped:
            await handle.stop()
        op.kube.close()


class Api:
    """Plain HTTP calls to the emulator, the way kubectl would make them."""

    def __init__(self, url: str, namespace: str):
        self.url, self.ns = url.rstrip("/"), namespace
        self.session = aiohttp.ClientSession(self.url)

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path.format(ns=self.ns), data=data,
                                        headers={"Content-Type": content_type}) as r:
            return r.status, await r.json(content_type=None)

    async def apply(self, body: dict[str, Any]) -> tuple[int, Any]:
        body = {**body, "metadata": {**body["metadata"], "namespace": self.ns}}
        return await self.request("POST", BENCHMARKS, body)

    async def benchmark(self, name: str) -> dict[str, Any] | None:
        code, obj = await self.request("GET", BENCHMARKS + "/" + name)
        return obj if code == 200 else None

    async def delete(self, path: str) -> int:
        code, _ = await self.request("DELETE", path)
        return code

    async def items(self, path: str) -> list[dict[str, Any]]:
        code, obj = await self.request("GET", path)
        return obj.get("items", []) if code == 200 else []


def benchmark(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
            "metadata": {"name": name}, "spec": spec}


async def finished(api: Api, name: str, timeout: float) -> dict[str, Any]:
    from support.fake_controllers import wait_for

    async def done() -> dict[str, Any] | None:
        obj = await api.benchmark(name)
        phase = ((obj or {}).get("status") or {}).get("phase")
        return obj if phase in ("Succeeded", "Failed") else None

    return await wait_for(done, timeout, f"Benchmark {name} to finish", poll=0.1)
