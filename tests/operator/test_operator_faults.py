"""Fault injection on Kubernetes: the runner deletes one of its trial's worker pods mid-run.

The real operator, the real runner and real local clusters against the API emulator. Ray: the
fake KubeRay (one Pod per node, whose deletion stops the node as a kubelet stops a container:
SIGTERM, SIGKILL 2 s later; a new pod and node for a deleted worker, as KubeRay's reconciler
makes).
Dask: the real dask-kubernetes controller, whose worker Deployments our ReplicaSet stand-in
keeps at one pod (``tests/support/real_dask_operator.py``).
"""
from __future__ import annotations

import json

import pytest

from support.operator_harness import benchmark, finished, running_operator
from support.real_dask_operator import RealDaskControllers

NS = "ns1"
PODS = f"/api/v1/namespaces/{NS}/pods"


@pytest.mark.slow
async def test_runner_deletes_a_worker_pod_of_its_own_trial(cluster):
    k8s, api, kubeconfig = cluster
    async with RealDaskControllers(k8s.url, NS, kubeconfig) as fake, \
            running_operator(k8s.url, NS):
        code, _ = await api.apply(benchmark(
            "faulty", frameworks=["ray", "dask"], workers=[2], repeats=1, warmup=1,
            workload={"name": "knn", "params": {"chunks_per_worker": 8}},
            dataset={"name": "synthetic", "samples": 40000, "features": 20},
            faults={"killWorkers": 1, "afterFraction": 0.4, "seed": 2,
                    "detectTimeoutSeconds": 30},
            ray={"healthCheckPeriodMs": 500, "healthCheckFailureThreshold": 3},
            dask={"allowedFailures": 2}))
        assert code in (200, 201)
        obj = await finished(api, "faulty", 900)
        status = obj["status"]
        assert status["phase"] == "Succeeded", status["message"]
        # While the trial's cluster lived, its controller replaced the deleted pod.
        # (Pods the garbage collector deleted with their Deployment at the end are not.)
        assert len(fake.replaced_pods) == 2, json.dumps(
            [fake.killed_pods, fake.replaced_pods, fake.not_replaced,
             [t["results"][0].get("fault") for t in status["trials"]]])
        pods = {p["metadata"]["name"]: p for p in await api.items(PODS)}
        replacements = {fake.replaced_pods[d][0] for d in fake.replaced_pods}

    # Exactly one worker pod per trial was deleted, by the runner, through the API.
    deletes = [r for r in k8s.emulator.history
               if r.method.value == "DELETE" and "/pods/" in str(r.url)]
    deleted = sorted(str(r.url).rsplit("/", 1)[1].split("?")[0] for r in deletes)
    assert set(deleted) <= set(fake.killed_pods) and len(deleted) == 2, deleted
    assert all("-worker-" in name for name in deleted)
    assert not set(deleted) & set(pods)  # gone from the API too
    assert set(fake.replaced_pods) == set(deleted)
    assert all("-worker-" in name for name in replacements) and not replacements & set(deleted)
    # The runner (the kubernetes client) used exactly what the chart's runnerPodFaults grants.
    runner_pod_calls = {
        ("delete" if r.method.value == "DELETE" else "list" if r.method.value == "GET" else
         r.method.value) for r in k8s.emulator.history
        if "/pods" in str(r.url) and r.headers.get("User-Agent", "").startswith(
            ("OpenAPI-Generator/", "testbed-runner/"))}  # the runner's, not the operator's
    assert runner_pod_calls == {"list", "delete"}

    by_framework = {t["framework"]: t for t in status["trials"]}
    ray_fault = by_framework["ray"]["results"][0]["fault"]
    dask_fault = by_framework["dask"]["results"][0]["fault"]
    for fault, by in ((ray_fault, "kuberay"), (dask_fault, "deployment")):
        assert fault["finished"] is True and fault["qualityMatches"] is True, fault
        assert fault["workersRemoved"] == 1 and fault["seconds"] > 0, fault
        assert len(fault["killed"]) == 1
        # What the real controllers do: a new pod, whose worker joined the cluster. The
        # record says who replaced it and when it registered with the head / scheduler.
        rep = fault["replacement"]
        assert rep["by"] == by and rep["expected"] == 1 and rep["arrived"] == 1, fault
        assert 0 < rep["afterSeconds"] < 120, fault
    # The kubelet SIGTERMs a deleted pod and SIGKILLs it 2 s later: Dask's scheduler removes
    # the worker at once; a Ray node may drain without failing a task, so the GCS marking it
    # dead is the evidence there (tests/cluster/test_real_cluster.py sees the same on real pods).
    assert dask_fault["detectedAfterSeconds"] < 5, dask_fault
    assert 0 < ray_fault["nodeDeadAfterSeconds"] < 30, ray_fault
    # The victims named as the frameworks know them: the Ray node's IP (the pod's podIP) and
    # the Dask worker's name (the pod's DASK_WORKER_NAME).
    ray_pod = next(n for n in deleted if n.startswith("faulty-ray-2"))
    dask_pod = next(n for n in deleted if n.startswith("faulty-dask-2"))
    assert ray_fault["killed"] == [_pod_ip(k8s, ray_pod)]
    assert dask_fault["killed"] == [_dask_name(k8s, dask_pod)]
    # The spec's framework settings were in effect, and say so.
    # A connected cluster: the head is not the runner's; the driver used KubeRay's token.
    settings = {k: v for k, v in ray_fault["settings"].items() if k != "auth_mode"}
    assert settings == {"max_retries": 3}
    assert ray_fault["settings"].get("auth_mode", "token") == "token"
    assert dask_fault["settings"] == {"allowed_failures": 2, "nanny": True}


def _created(k8s, name: str) -> dict:
    for r in k8s.emulator.history:
        if r.method.value in ("POST", "PATCH") and str(r.url).split("?")[0].endswith(
                (f"/pods/{name}/status", "/pods")) and r.data and \
                (r.data.get("metadata") or {}).get("name", name) == name:
            yield r.data


def _pod_ip(k8s, name: str) -> str:
    for data in _created(k8s, name):
        ip = (data.get("status") or {}).get("podIP")
        if ip:
            return ip
    raise AssertionError(f"no podIP for {name}")


def _dask_name(k8s, name: str) -> str:
    for data in _created(k8s, name):
        for c in (data.get("spec") or {}).get("containers", []):
            for e in c.get("env", []):
                if e["name"] == "DASK_WORKER_NAME":
                    return e["value"]
    raise AssertionError(f"no DASK_WORKER_NAME for {name}: {json.dumps(list(_created(k8s, name)))}")
