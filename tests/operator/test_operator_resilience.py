"""The operator under API-server faults and hard kills: it retries with back-off, converges,
runs no trial twice and loses no result."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from support.fake_controllers import FakeControllers, wait_for
from support.k8s_emulator import fail_requests
from support.operator_harness import benchmark, finished, free_port, running_operator

NS = "ns1"


async def test_server_errors_and_conflicts_are_retried_until_the_benchmark_completes(cluster):
    k8s, api, kubeconfig = cluster
    faults = {
        "status 500": fail_requests(500, 3, method="PATCH", plural="benchmarks",
                                    subresource="status"),
        "rayjob 503": fail_requests(503, 2, method="POST", plural="rayjobs"),
        "daskcluster 409": fail_requests(409, 1, method="POST", plural="daskclusters"),
        "job get 500": fail_requests(500, 2, method="GET", plural="jobs", name="api-dask-1-runner"),
    }
    k8s.emulator.faults.extend(faults.values())
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True) as fake, \
            running_operator(k8s.url, NS) as running:
        await api.apply(benchmark("api", frameworks=["ray", "dask"], workers=[1]))
        obj = await finished(api, "api", 90)
        # As Prometheus reads it: the counter's exposed sample.
        errors = running.op.metrics.registry.get_sample_value(
            "testbed_reconcile_errors_total", {"namespace": NS, "benchmark": "api"})
    assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
    assert {k: f.hits for k, f in faults.items()} == {
        "status 500": 3, "rayjob 503": 2, "daskcluster 409": 1, "job get 500": 2}
    assert errors >= 3  # each failed step was counted, then retried
    assert fake.starts == {"RayJob/api-ray-1": 1, "DaskCluster/api-dask-1": 1,
                           "Job/api-dask-1-runner": 1}
    assert all(t["attempts"] == 1 and t["results"] for t in obj["status"]["trials"])
    assert k8s.emulator.errors == []  # every failure was an injected one


async def test_dropped_watch_streams_are_resumed(cluster):
    k8s, api, kubeconfig = cluster
    k8s.emulator.watch_cut_seconds = 0.5  # every watch connection is cut twice a second
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True) as fake, \
            running_operator(k8s.url, NS):
        for name in ("w1", "w2"):
            await api.apply(benchmark(name, frameworks=["dask", "ray"], workers=[1, 2]))
        objs = [await finished(api, n, 120) for n in ("w1", "w2")]
    assert [o["status"]["phase"] for o in objs] == ["Succeeded", "Succeeded"]
    assert set(fake.starts.values()) == {1} and len(fake.starts) == 12
    watches = [r for r in k8s.emulator.history if r.params.get("watch") in ("true", "True")
               and r.resource is not None and r.resource.plural == "benchmarks"]
    assert len(watches) >= 3  # Kopf reconnected after the cuts


async def test_an_operator_killed_with_sigkill_mid_trial_is_replaced_without_rerunning(
        cluster, tmp_path):
    """SIGKILL (no graceful shutdown) while a runner runs; a new operator process resumes."""
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()
    env = {**os.environ, "KUBECONFIG": kubeconfig, "TESTBED_POLL_SECONDS": "0.2",
           "TESTBED_NAMESPACES": NS, "TESTBED_METRICS_PORT": "0"}
    exe = os.path.join(os.path.dirname(sys.executable), "testbed-operator")

    def start(log_name: str) -> subprocess.Popen:
        # The operator writes to its own copy of the log's descriptor; ours closes at once.
        with open(tmp_path / log_name, "w") as log:
            return subprocess.Popen([exe, "--liveness",
                                     f"http://127.0.0.1:{free_port()}/healthz"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)

    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake:
        first = start("first.log")
        try:
            await api.apply(benchmark("kill", frameworks=["dask", "ray"], workers=[1]))
            await wait_for(lambda: fake.starts["Job/kill-dask-1-runner"] == 1, 60, "the runner")
            first.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 30) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
        second = start("second.log")
        try:
            gate.set()
            obj = await finished(api, "kill", 90)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 60)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
    assert fake.starts == {"DaskCluster/kill-dask-1": 1, "Job/kill-dask-1-runner": 1,
                           "RayJob/kill-ray-1": 1}
    assert [t["attempts"] for t in obj["status"]["trials"]] == [1, 1]
    assert all(t["results"][0]["seconds"] for t in obj["status"]["trials"])  # nothing lost
