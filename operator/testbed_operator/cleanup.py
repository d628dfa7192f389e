"""Deleting what trials leave: after each trial, before a retry, after a restart, and with the
Benchmark (every child by label)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.kube import names

from . import manifests, trials
from .config import OperatorConfig
from .drivers import CONFIGMAP, LABELLED_KINDS, NETWORKPOLICY, ObjRef, driver_for
from .kube import Kube


class Cleanup:
    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube, self.config = kube, config

    def _objects(self, fw: str, tname: str) -> list[ObjRef]:
        """A trial's objects in deletion order: the NetworkPolicy last, as it protected the
        cluster until then."""
        objs = driver_for(fw).children(tname)
        if self.config.network_policy:
            objs.append((*NETWORKPOLICY, tname))
        return objs

    async def trial(self, ns: str, name: str, fw: str, workers: int, keep: bool) -> None:
        """A finished trial's ConfigMap and (unless ``keep``) its objects."""
        tname = names.trial_name(name, fw, workers)
        await self.kube.delete(*CONFIGMAP, ns, names.result_configmap_name(tname))
        if keep:
            return
        for api_version, kind, obj_name in self._objects(fw, tname):
            await self.kube.delete(api_version, kind, ns, obj_name)

    async def wait_gone(self, ns: str, fw: str, tname: str, timeout: float = 300) -> None:
        """Until the trial's objects are deleted, so that the next attempt creates new ones."""
        deadline = time.monotonic() + timeout
        for api_version, kind, name in self._objects(fw, tname):
            while await self.kube.get(api_version, kind, ns, name) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} {name} was not deleted within {timeout:g} s; "
                                       f"cannot retry the trial")
                await asyncio.sleep(self.config.poll_seconds)

    async def done_trials(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        """After a restart: finish the cleanup of trials that ended just before it."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        keep = manifests.spec_keep_clusters(body)
        for t in status.get("trials") or []:
            if t["state"] in (trials.SUCCEEDED, trials.FAILED) and t.get("cluster"):
                await self.trial(ns, name, t["framework"], t["workers"], keep)

    async def delete_children(self, ns: str, name: str) -> int:
        """Every object labelled with this Benchmark, whatever its trial's state."""
        selector = f"{names.BENCHMARK_LABEL}={names.label_value(name)}"
        n = 0
        kinds = list(LABELLED_KINDS)
        if self.config.network_policy:  # (with it off, the operator may not list them)
            kinds.append(NETWORKPOLICY)
        for api_version, kind in kinds:
            for obj in await self.kube.list(api_version, kind, ns, selector):
                n += await self.kube.delete(api_version, kind, ns, obj["metadata"]["name"])
        return n
