"""One definition of a ready cluster, and fakes no more lenient than the real controllers.

* KubeRay's probes (common/pod.go ``initLivenessAndReadinessProbe``): the fake KubeRay builds
  them from the RayJob's ``rayClusterSpec`` as KubeRay does, the fake kubelet runs the
  readiness probe against the local Ray node each pod stands for, and the RayJob leaves
  Initializing only when every pod is Ready. Without ``rayVersion`` the probe runs ``wget``,
  which the image lacks: the trial fails at ``startupTimeoutSeconds`` saying so.
* dask-kubernetes sets a DaskCluster ``Running`` as soon as its scheduler Service exists,
  before any pod: the runner waits for the scheduler and the N workers itself, and
  ``clusterStartupSeconds`` (cluster object created -> runner saw N workers registered) includes
  that wait.
"""
from __future__ import annotations

import shutil
import socket
from datetime import datetime

import pytest

from support.fake_controllers import FakeControllers, kuberay_probes, wait_for
from support.operator_harness import benchmark, finished, running_operator

NS = "ns1"
PODS = "/api/v1/namespaces/{ns}/pods"
EVENTS = "/api/v1/namespaces/{ns}/events"
DASKCLUSTERS = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
KNN = {"workload": {"name": "knn"}, "dataset": {"name": "digits"}}
WGET = "wget --tries 1 -T {t} -q -O- http://localhost:{port}/api/{path} | grep success"


def test_the_fake_kuberay_builds_probes_like_kuberays_pod_go():
    c = {"name": "ray-head", "image": "img"}
    # rayVersion >= 2.53.0: httpGet /api/healthz on the dashboard agent's port, head and worker.
    for node, timeout in (("head", 5), ("worker", 2)):
        built = kuberay_probes(c, node, {}, "2.60.0")
        for field, delay, failures in (("readinessProbe", 10, 10), ("livenessProbe", 30, 120)):
            assert built[field] == {"httpGet": {"path": "/api/healthz", "port": 52365},
                                    "initialDelaySeconds": delay, "timeoutSeconds": timeout,
                                    "periodSeconds": 5, "successThreshold": 1,
                                    "failureThreshold": failures}
    assert kuberay_probes(c, "worker", {"dashboard-agent-listen-port": "7000"}, "2.53")[
        "readinessProbe"]["httpGet"]["port"] == 7000
    # Without rayVersion, older or unparsable: exec probes running wget in bash.
    raylet = WGET.format(t=2, port=52365, path="local_raylet_healthz")
    gcs = WGET.format(t=10, port=8265, path="gcs_healthz")  # upstream passes FailureThreshold
    for version in (None, "", "2.52.0", "nightly"):
        head = kuberay_probes(c, "head", {}, version)
        worker = kuberay_probes(c, "worker", {}, version)
        for field in ("readinessProbe", "livenessProbe"):
            assert head[field]["exec"] == {"command": ["bash", "-c", f"{raylet} && {gcs}"]}
            assert worker[field]["exec"] == {"command": ["bash", "-c", raylet]}
            assert "httpGet" not in head[field]
    assert kuberay_probes(c, "head", {"dashboard-port": "9000"}, None)["readinessProbe"]["exec"][
        "command"][2].endswith("http://localhost:9000/api/gcs_healthz | grep success")
    # A probe the container sets itself is kept; the template is not changed.
    own = {"exec": {"command": ["true"]}}
    kept = kuberay_probes({**c, "readinessProbe": own}, "head", {}, "2.60.0")
    assert kept["readinessProbe"] == own
    assert "readinessProbe" not in c


def _without_ray_version(monkeypatch):
    import testbed_operator.manifests as m

    real = m.ray_cluster_spec

    def spec(*a, **kw):
        out = real(*a, **kw)
        out.pop("rayVersion")
        return out

    monkeypatch.setattr(m, "ray_cluster_spec", spec)


async def _unhealthy(api, pod: str) -> list[str]:
    return [e["message"] for e in await api.items(EVENTS)
            if e["involvedObject"] == {**e["involvedObject"], "kind": "Pod", "name": pod}
            and e["reason"] == "Unhealthy"]


@pytest.mark.slow
async def test_a_rayjob_without_ray_version_never_gets_ready_and_its_trial_says_why(
        cluster, monkeypatch):
    """No rayVersion (token auth needs one, so auth is off): KubeRay's exec probes run wget,
    which the image lacks. The pods run but never become Ready, the RayJob stays Initializing,
    the trial fails at startupTimeoutSeconds with the probe's failure in its error. The same
    probe with wget on the PATH passes against the same nodes: only wget is missing."""
    _without_ray_version(monkeypatch)
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig) as fake, \
            running_operator(k8s.url, NS, failure_check_seconds=0.5):
        await api.apply(benchmark("nover", frameworks=["ray"], workers=[1],
                                  ray={"authMode": "disabled"},
                                  startupTimeoutSeconds=60, timeoutSeconds=600))
        head, worker = "nover-ray-1-raycluster-head", "nover-ray-1-raycluster-worker-0"
        await wait_for(lambda: _unhealthy(api, worker), 150, "the worker's failed readiness probe")
        for pod in (head, worker):
            assert "exec" in fake.pod_specs[pod]["readinessProbe"]
            assert fake.pod_ready[pod] is False
        (said,) = await _unhealthy(api, worker)
        assert (said.startswith("Readiness probe failed: ")
                and "wget: command not found" in said), said
        rayjob = await api.request("GET", "/apis/ray.io/v1/namespaces/{ns}/rayjobs/nover-ray-1")
        assert rayjob[1]["status"]["jobDeploymentStatus"] == "Initializing"
        # With wget in the image the very same probes pass against these nodes.
        if shutil.which("wget"):
            nodes = fake._clusters["RayJob/nover-ray-1"].info["nodes"]
            containers = (fake.pod_specs[head], fake.pod_specs[worker])
            with_wget = FakeControllers(k8s.url, NS, kubeconfig,
                                        image_tools=("bash", "grep", "wget"))
            try:
                for node, fw_name, pod in ((nodes[0], None, head), (nodes[1], "w", worker)):
                    targets = with_wget._probe_targets(node, containers, fw_name)
                    ok, why = await with_wget.probe(fake.pod_specs[pod]["readinessProbe"], targets)
                    assert ok, why
            finally:
                shutil.rmtree(with_wget._image_path(), ignore_errors=True)
        obj = await finished(api, "nover", 150)
    (trial,) = obj["status"]["trials"]
    assert trial["state"] == "Failed" and not trial.get("clusterReadyAt")
    assert "was not ready within startupTimeoutSeconds=60" in trial["error"], trial["error"]
    assert f"pod {worker} not Ready (Readiness probe failed: " in trial["error"], trial["error"]
    assert "wget: command not found" in trial["error"], trial["error"]
    assert "clusterStartupSeconds" not in trial


async def test_the_fast_fake_is_not_more_lenient_about_exec_probes(cluster, monkeypatch):
    """``fast=True`` has no nodes to probe, but a RayJob with wget exec probes still never
    becomes ready there; with rayVersion (HTTP probes) the same trial runs."""
    _without_ray_version(monkeypatch)
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True), running_operator(k8s.url, NS):
        await api.apply(benchmark("fastexec", frameworks=["ray"], workers=[1],
                                  ray={"authMode": "disabled"}, startupTimeoutSeconds=3))
        obj = await finished(api, "fastexec", 60)
        monkeypatch.undo()
        await api.apply(benchmark("fasthttp", frameworks=["ray"], workers=[1]))
        ok = await finished(api, "fasthttp", 60)
    (trial,) = obj["status"]["trials"]
    assert (trial["state"] == "Failed"
            and "startupTimeoutSeconds=3" in trial["error"]), trial["error"]
    (trial,) = ok["status"]["trials"]
    assert trial["state"] == "Succeeded" and trial["clusterStartupSeconds"] >= 0


@pytest.mark.slow
async def test_with_ray_version_the_http_probe_passes_and_startup_is_the_runners(cluster):
    """The operator's RayJob (rayVersion set): httpGet /api/healthz probes, which pass against
    each node's dashboard agent; the RayJob runs once head and worker are Ready.
    clusterStartupSeconds runs from the RayJob's creation until the runner saw its workers."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig) as fake, running_operator(k8s.url, NS):
        await api.apply(benchmark("ver", frameworks=["ray"], workers=[2], repeats=1, warmup=0,
                                  **KNN))
        obj = await finished(api, "ver", 400)
        pods = ["ver-ray-2-raycluster-head", "ver-ray-2-raycluster-worker-0",
                "ver-ray-2-raycluster-worker-1"]
        for pod in pods:
            assert fake.pod_specs[pod]["readinessProbe"]["httpGet"] == {"path": "/api/healthz",
                                                                       "port": 52365}
            assert fake.pod_ready[pod] is True
    (trial,) = obj["status"]["trials"]
    assert trial["state"] == "Succeeded", trial.get("error")
    (res,) = trial["results"]
    assert 0 < res["phases"]["startup"] <= trial["clusterStartupSeconds"]


async def test_the_fake_dask_operator_is_running_before_any_pod(cluster):
    """dask-kubernetes' handle_scheduler_service_status: Running once the scheduler Service
    exists, then (the race of dask-kubernetes#968, taken every time) Pending for good. Its
    address refuses connections until the scheduler pod is up."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, late_scheduler={"early": 3600}) as fake:
        code, _ = await api.request("POST", DASKCLUSTERS, {
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
            "metadata": {"name": "early", "namespace": NS},
            "spec": {"worker": {"replicas": 1,
                                "spec": {"containers": [{"name": "w", "image": "i"}]}},
                     "scheduler": {"spec": {"containers": [{"name": "s", "image": "i"}]},
                                   "service": {"type": "ClusterIP", "ports": [{"port": 8786}]}}}})
        assert code == 201

        async def phase():
            obj = (await api.request("GET", DASKCLUSTERS + "/early"))[1]
            return (obj.get("status") or {}).get("phase") == "Pending"

        await wait_for(phase, 30, "the DaskCluster to be Pending after Running")
        phases = [r.data["status"]["phase"] for r in k8s.emulator.history
                  if r.method.value == "PATCH"
                  and str(r.url).split("?")[0].endswith("/daskclusters/early")]
        assert phases == ["Created", "Running", "Pending"]
        assert await api.items(PODS) == [] and "DaskCluster/early" not in fake._clusters
        port = int(fake._dask_addresses[f"early-scheduler.{NS}.svc"].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError), socket.socket() as s:
            s.connect(("127.0.0.1", port))


@pytest.mark.slow
async def test_a_dask_trial_whose_scheduler_comes_late_succeeds_and_counts_the_wait(cluster):
    """The runner starts when the DaskCluster is Running, before its scheduler pod: it waits
    (beyond the Dask client's 30 s connect timeout if need be) and clusterStartupSeconds
    includes the wait."""
    late = 8.0
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig,
                               late_scheduler={"late-dask-1": late}) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("late", frameworks=["dask"], workers=[1], repeats=1, warmup=0,
                                  timeoutSeconds=300, startupTimeoutSeconds=300, **KNN))
        obj = await finished(api, "late", 300)
        up = fake.scheduler_up_at["DaskCluster/late-dask-1"]
        runner = fake.job_started_at["Job/late-dask-1-runner"]
    (trial,) = obj["status"]["trials"]
    assert trial["state"] == "Succeeded", trial.get("error")
    assert runner < up  # the runner was there first, waiting
    assert trial["clusterStartupSeconds"] >= late
    (res,) = trial["results"]
    # The runner's own start-up window (it ends when its worker registered) holds the moment
    # the scheduler came up: it waited for it. (Not "startup >= up - runner": the runner's
    # process also imports and loads the data before it starts waiting, seconds under load.)
    created = datetime.fromisoformat(trial["clusterCreatedAt"].replace("Z", "+00:00"))
    ready_at = created.timestamp() + trial["clusterStartupSeconds"]  # the runner's ready_at
    assert ready_at - res["phases"]["startup"] <= up <= ready_at + 0.01  # (ms rounding)
    assert res["phases"]["startup"] <= trial["clusterStartupSeconds"]
