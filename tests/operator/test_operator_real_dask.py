"""A Dask trial through the real Kopf testbed operator and the real dask-kubernetes controller
(``tests/support/real_dask_operator.py``: the wheel's Kopf operator as a process against the
emulator, with a Deployment → Pod → local process kubelet stand-in)."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from support.fake_controllers import wait_for
from support.operator_harness import Api, benchmark, finished, running_operator
from support.real_dask_operator import DASKWORKERGROUPS, DEPLOYMENTS, SERVICES, RealDaskControllers

NS = "ns1"
DASKCLUSTERS = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
PODS = "/api/v1/namespaces/{ns}/pods"
KNN = {"workload": {"name": "knn"}, "dataset": {"name": "digits"}}


async def _phases(url: str, name: str, seen: list[tuple[str, float]]) -> None:
    """Every ``status.phase`` the DaskCluster ``name`` goes through, with when it was seen."""
    async with aiohttp.ClientSession(url) as s, \
            s.get(DASKCLUSTERS.format(ns=NS), params={"watch": "true"},
                  timeout=aiohttp.ClientTimeout(total=None)) as r:
        async for line in r.content:
            if not line.strip():
                continue
            obj = json.loads(line)["object"]
            if obj["metadata"]["name"] != name:
                continue
            phase = (obj.get("status") or {}).get("phase")
            if phase and (not seen or seen[-1][0] != phase):
                seen.append((phase, time.time()))


async def _names(api: Api, path: str) -> list[str]:
    return [o["metadata"]["name"] for o in await api.items(path)]


@pytest.mark.slow
async def test_a_dask_trial_runs_on_the_real_dask_kubernetes_controller(cluster):
    k8s, api, kubeconfig = cluster
    late = 3.0  # the scheduler's pod comes late, as after an image pull
    seen: list[tuple[str, float]] = []
    t0 = time.monotonic()
    async with RealDaskControllers(k8s.url, NS, kubeconfig,
                                   late_scheduler={"real-dask-1": late}) as ctl, \
            running_operator(k8s.url, NS):
        watcher = asyncio.create_task(_phases(k8s.url, "real-dask-1", seen))
        try:
            await api.apply(benchmark("real", frameworks=["dask"], workers=[1], repeats=1, warmup=0,
                                      keepClusters=True, timeoutSeconds=300,
                                      startupTimeoutSeconds=120, **KNN))
            obj = await finished(api, "real", 240)
            elapsed = time.monotonic() - t0
            (trial,) = obj["status"]["trials"]
            assert trial["state"] == "Succeeded", (trial.get("error"),
                                                   ctl.controller.output()[-3000:])
            (res,) = trial["results"]
            assert res["state"] == "succeeded" and res["quality"] > 0.9
            # The phases are the real controller's: Created, then Pending and Running in the
            # order its two handlers happen to write them (dask/dask-kubernetes#968: Running
            # first leaves it Pending), Running before the scheduler pod existed (the runner
            # waited for it).
            phases = [p for p, _ in seen]
            assert phases[0] == "Created" and set(phases[1:3]) == {"Pending", "Running"}, seen
            running_at = dict(seen)["Running"]
            (sched,) = [p for p in ctl.pod_created_at if p.startswith("real-dask-1-scheduler-")]
            assert running_at < ctl.pod_created_at[sched]
            assert (ctl.job_started_at["Job/real-dask-1-runner"]
                    < ctl.scheduler_up_at["DaskCluster/real-dask-1"])
            # No fake Dask operator.
            assert not any(k.startswith("DaskCluster/") for k in ctl.starts)
            # What the real controller made: the scheduler Deployment and Service, the default
            # DaskWorkerGroup and its one worker Deployment, each started once.
            deployments = await _names(api, DEPLOYMENTS)
            assert "real-dask-1-scheduler" in deployments
            workers = [d for d in deployments if d.startswith("real-dask-1-default-worker-")]
            assert len(workers) == 1, deployments
            assert await _names(api, SERVICES) == ["real-dask-1-scheduler"]
            assert await _names(api, DASKWORKERGROUPS) == ["real-dask-1-default"]
            assert set(ctl.starts.values()) == {1}
            # Deleting the Benchmark takes the DaskCluster with it, and everything it owns
            # (the emulator's garbage collector), and the processes those pods stood for.
            procs = [p for k, p in ctl._procs.items() if k.startswith("Deployment/")]
            assert len(procs) == 2
            real = "/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks/real"
            assert await api.delete(real) in (200, 202)

            async def all_gone() -> bool:
                for path in (DASKCLUSTERS, DASKWORKERGROUPS, DEPLOYMENTS, SERVICES, PODS):
                    if [n for n in await _names(api, path) if n.startswith("real-dask-1")]:
                        return False
                return all(p.returncode is not None for p in procs)

            await wait_for(all_gone, 60, "the DaskCluster, its children and processes to be gone")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    print(f"real dask-kubernetes trial: {elapsed:.1f} s to finish")
