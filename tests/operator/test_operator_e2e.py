"""The real Kopf operator against the API emulator, with fake KubeRay / Dask operator / kubelet
controllers that start real local clusters and run the real ``testbed runner``."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from support.fake_controllers import FakeControllers, wait_for
from support.operator_harness import Api, benchmark, finished, running_operator

NS = "ns1"
SECRET = "e2e-s3cr3t-never-stored"
RAYJOBS = "/apis/ray.io/v1/namespaces/{ns}/rayjobs"
DASKCLUSTERS = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
BENCHMARKS = "/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks"


async def no_children(api: Api) -> bool:
    # NetworkPolicies too: the operator deletes a trial's policy after its cluster, and the
    # Benchmark may read Succeeded before that last delete (seen once in CI).
    for path in (RAYJOBS, DASKCLUSTERS, JOBS, NETWORKPOLICIES):
        if await api.items(path):
            return False
    return not [c for c in await api.items(CONFIGMAPS) if c["metadata"]["name"].endswith("-result")]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") and not labels:
            return float(line.rsplit(" ", 1)[1])
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.index("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _connects(address: str, node_ip: str, env: dict[str, str],
              home: str) -> subprocess.CompletedProcess:
    """A Ray driver outside the cluster, with only ``env``'s auth settings (and a home without
    ~/.ray/auth_token)."""
    os.makedirs(home, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    code = (f"import ray; ray.init(address={address!r}, _node_ip_address={node_ip!r}, "
            "logging_level='ERROR'); print(len(ray.nodes()))")
    return subprocess.run([sys.executable, "-c", code], env={**clean, "HOME": home, **env},
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
async def test_ray_and_dask_at_1_and_2_workers_end_to_end(cluster, monkeypatch, tmp_path):
    """The issue's end-to-end test: real clusters, real runners, results in status, metrics
    and S3 (moto on loopback), every child removed, nothing ran twice. The Ray clusters run
    with KubeRay's token auth (the default authMode): a driver without the token is refused,
    the runner (the RayJob's driver, with the head's environment) connects."""
    import boto3
    from moto.server import ThreadedMotoServer

    k8s, api, kubeconfig = cluster
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    try:
        endpoint = f"http://127.0.0.1:{s3._server.server_port}"
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "AKIDTESTBEDE2E",
                     "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket="results")
        gate = asyncio.Event()
        async with FakeControllers(k8s.url, NS, kubeconfig, gate=gate) as fake, \
                running_operator(k8s.url, NS) as running:
            code, _ = await api.apply(benchmark(
                "e2e", frameworks=["ray", "dask"], workers=[1, 2],
                workload={"name": "knn", "params": {"n_neighbors": 5}}, dataset={"name": "digits"},
                repeats=2, warmup=0, resultsUri="s3://results/runs"))
            assert code in (200, 201)
            # The first Ray cluster is up, its runner waits at the gate: token auth is on.
            key = "RayJob/e2e-ray-1"
            await wait_for(lambda: key in fake._clusters and fake._clusters[key].info, 300,
                           "the first Ray cluster")
            auth = fake.auth_env[key]
            assert auth["RAY_AUTH_MODE"] == "token" and len(auth["RAY_AUTH_TOKEN"]) == 44
            info = fake._clusters[key].info
            refused = await asyncio.to_thread(_connects, info["address"], info["head_ip"], {},
                                              str(tmp_path / "home"))
            assert refused.returncode != 0, refused.stdout
            assert "token" in refused.stderr.lower(), refused.stderr[-2000:]
            gate.set()
            obj = await finished(api, "e2e", 600)
            await wait_for(lambda: no_children(api), 60, "children to be deleted")
            status = obj["status"]
            assert status["phase"] == "Succeeded", status["message"]
            assert status["progress"] == "4/4"
            assert [(t["framework"], t["workers"], t["state"]) for t in status["trials"]] == [
                ("ray", 1, "Succeeded"), ("ray", 2, "Succeeded"),
                ("dask", 1, "Succeeded"), ("dask", 2, "Succeeded")]
            for t in status["trials"]:
                (res,) = t["results"]
                assert res["state"] == "succeeded" and len(res["seconds"]) == 2
                assert res["median"] > 0 and res["qualityMetric"] == "accuracy"
                assert res["quality"] > 0.9  # KNN on digits
                assert res["cpu"] is not None and res["memory"] > 0
                assert {"startup", "load", "distribute"} <= set(res["phases"])
                assert t["clusterStartupSeconds"] >= 0 and t["resultsObject"].startswith("s3://results/runs/ns1/e2e/")
                doc = json.loads(boto3.client("s3").get_object(
                    Bucket="results", Key=t["resultsObject"].split("/", 3)[3])["Body"].read())
                assert doc["records"][0]["seconds"] == res["seconds"]
            rows = {(r["framework"], r["workers"]): r for r in status["summary"]}
            assert set(rows) == {("ray", 1), ("ray", 2), ("dask", 1), ("dask", 2)}
            for fw in ("ray", "dask"):
                assert rows[(fw, 1)]["speedup"] == pytest.approx(1.0)
                assert rows[(fw, 2)]["speedup"] == pytest.approx(
                    rows[(fw, 1)]["median"] / rows[(fw, 2)]["median"], rel=1e-6)
            # Each cluster resource and runner was created once and run once.
            assert set(fake.starts.values()) == {1} and len(fake.starts) == 6
            # The runners published their results under their own name (managedFields).
            published = [r for r in k8s.emulator.history if r.resource is not None
                         and r.resource.plural == "configmaps" and r.method.value == "POST"
                         and r.headers.get("User-Agent", "").startswith("testbed-runner/")]
            assert len(published) == 4
            assert {r.params.get("fieldManager") for r in published} == {"testbed-runner"}
            assert fake.auth_env["RayJob/e2e-ray-2"]["RAY_AUTH_MODE"] == "token"
            assert fake.auth_env["RayJob/e2e-ray-2"]["RAY_AUTH_TOKEN"] != auth["RAY_AUTH_TOKEN"]
            assert set(running.op.submissions.values()) == {1}
            assert all(code == 0 for code in fake.exits.values())
            # Metrics, scraped over HTTP, re-exported from the status.
            text = await asyncio.to_thread(scrape, running.op.config.metrics_port)
            for (fw, w), row in rows.items():
                got = sample(text, "testbed_trial_duration_seconds", benchmark="e2e", framework=fw,
                             workers=str(w), workload="knn")
                assert got == pytest.approx(row["median"])
                assert sample(text, "testbed_trial_speedup", benchmark="e2e", framework=fw,
                              workers=str(w)) == pytest.approx(row["speedup"])
            assert sample(text, "testbed_trials", benchmark="e2e", state="Succeeded") == 4
            assert sample(text, "testbed_benchmarks", phase="Succeeded") == 1
            assert sample(text, "testbed_time_to_first_trial_seconds_count") == 1
            assert sample(text, "testbed_reconcile_errors_total", benchmark="e2e") is None
            # Credentials never leak into the status, the metrics or the stored results.
            stored = [boto3.client("s3").get_object(Bucket="results",
                                                    Key=t["resultsObject"].split("/", 3)[3])
                      ["Body"].read().decode() for t in status["trials"]]
            for text_ in (json.dumps(obj), text, *stored):
                assert SECRET not in text_ and "AKIDTESTBEDE2E" not in text_
            # Kopf's liveness endpoint answers, with our probe in it.
            with urllib.request.urlopen(running.liveness, timeout=10) as r:
                assert r.status == 200 and "trialsRunning" in json.loads(r.read())
    finally:
        s3.stop()


NETWORKPOLICIES = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def _operator_requests(k8s, plural: str) -> list[tuple[str, str]]:
    """(method, name) of every request the operator (Kopf or our client) made for ``plural``."""
    return [(r.method.value, r.name or "") for r in k8s.emulator.history
            if r.resource is not None and r.resource.plural == plural
            and r.headers.get("User-Agent", "").startswith(("kopf/", "testbed-operator/"))]


@pytest.mark.parametrize("enabled", [True, False], ids=["network-policy", "no-network-policy"])
async def test_each_trial_runs_behind_its_own_network_policy(cluster, enabled):
    """With --network-policy: one NetworkPolicy per trial, created before the trial's cluster,
    selecting every pod of the trial, deleted after it. Without: none is ever touched."""
    import asyncio as aio

    import kubernetes_validate

    from bench.kube import names

    k8s, api, kubeconfig = cluster
    gate = aio.Event()
    prometheus = [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate), \
            running_operator(k8s.url, NS, network_policy=enabled,
                             network_policy_metrics_from=prometheus) as running:
        await api.apply(benchmark("np", frameworks=["ray", "dask"], workers=[1]))
        (rayjob,) = await wait_for(lambda: api.items(RAYJOBS), 30, "the RayJob")
        policies = await api.items(NETWORKPOLICIES)
        if enabled:
            # The Ray trial runs (its runner waits at the gate): its policy is there, alone.
            (policy,) = policies
            assert policy["metadata"]["name"] == rayjob["metadata"]["name"] == "np-ray-1"
            kubernetes_validate.validate(policy, "1.33.0", strict=True)  # as stored
            assert policy["metadata"]["ownerReferences"] == rayjob["metadata"]["ownerReferences"]
            rcs = rayjob["spec"]["rayClusterSpec"]
            for tpl in (rcs["headGroupSpec"]["template"], rcs["workerGroupSpecs"][0]["template"],
                        rayjob["spec"]["submitterPodTemplate"]):
                labels = tpl["metadata"]["labels"]
                for sel in (policy["spec"]["podSelector"],
                            policy["spec"]["ingress"][0]["from"][0]["podSelector"]):
                    assert all(labels.get(k) == v for k, v in sel["matchLabels"].items())
            assert policy["spec"]["ingress"][1]["from"] == prometheus
        else:
            assert policies == []
        gate.set()
        obj = await finished(api, "np", 60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
        await wait_for(lambda: no_children(api), 30, "children to be deleted")
        assert await api.items(NETWORKPOLICIES) == []
        calls = _operator_requests(k8s, "networkpolicies")
        if not enabled:
            assert calls == []
            return
        # Each policy was created once, before its cluster, and deleted after it.
        assert {k: v for k, v in running.op.submissions.items() if "NetworkPolicy" in k} == {
            "ns1/NetworkPolicy/np-ray-1": 1, "ns1/NetworkPolicy/np-dask-1": 1}
        order = [(r.method.value, r.resource.plural,
                  r.name or (r.data or {}).get("metadata", {}).get("name"))
                 for r in k8s.emulator.history
                 if r.resource is not None and r.method.value in ("POST", "DELETE")
                 and r.resource.plural in ("networkpolicies", "rayjobs", "daskclusters")]
        for fw, plural in (("ray", "rayjobs"), ("dask", "daskclusters")):
            name = names.trial_name("np", fw, 1)
            assert (order.index(("POST", "networkpolicies", name))
                    < order.index(("POST", plural, name)))
            assert (order.index(("DELETE", "networkpolicies", name))
                    > order.index(("DELETE", plural, name)))
