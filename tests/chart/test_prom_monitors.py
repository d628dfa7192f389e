"""tests/support/prom_monitors.py: the chart's PodMonitors and ServiceMonitor, rendered by Helm's
Go SDK, translated to plain Prometheus scrape jobs the way the Prometheus Operator generates them,
checked rule by rule, by ``promtool check config`` and by a real Prometheus relabelling pods the
operator's manifests label (only the testbed's become targets, with the trial's labels). No
cluster needed."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from test_chart import render

from testbed_operator.dashboard import LIVE
from testbed_operator.metrics import OperatorMetrics

from support.operator_harness import free_port
from support.prom_monitors import prometheus_config, sanitize_label_name, scrape_configs

PROMTOOL = shutil.which("promtool")
VALUES = {"metrics": {"podMonitors": {"enabled": True}, "serviceMonitor": {"enabled": True}},
          "watchNamespaces": ["bench"]}
RELEASE_NS = "testbed"
INIT = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
RUNNING = {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
           "regex": "(Failed|Succeeded)"}
# Only the testbed's pods (every pod of a trial carries testbed.dev/trial) ...
OURS = {"action": "keep", "source_labels": ["__meta_kubernetes_pod_labelpresent_testbed_dev_trial"],
        "regex": "true"}


def target_label(pod_label: str) -> dict:
    """... and their testbed.dev/* labels on every series (podTargetLabels)."""
    name = sanitize_label_name(pod_label)
    return {"source_labels": [f"__meta_kubernetes_pod_label_{name}"], "target_label": name,
            "regex": "(.+)", "replacement": "${1}"}


TRIAL_TARGET_LABELS = [target_label(f"testbed.dev/{k}")
                       for k in ("benchmark", "framework", "workers", "trial")]


@pytest.fixture(scope="module")
def monitors() -> list[dict]:
    docs = render(VALUES, namespace=RELEASE_NS)
    found = [d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    assert sorted(d["kind"] for d in found) == ["PodMonitor", "PodMonitor", "ServiceMonitor"]
    return found


def jobs_by_name(monitors: list[dict], **kw) -> dict[str, dict]:
    return {j["job_name"]: j for j in scrape_configs(monitors, "/kubeconfig", **kw)}


def test_the_ray_pod_monitor(monitors):
    jobs = jobs_by_name(monitors)
    assert list(jobs) == ["podMonitor/testbed/tb-testbed-ray/0",
                          "podMonitor/testbed/tb-testbed-dask/0",
                          "serviceMonitor/testbed/tb-testbed/0"]
    assert "&id" not in yaml.safe_dump(list(jobs.values()))  # no shared objects -> no YAML aliases
    job = jobs["podMonitor/testbed/tb-testbed-ray/0"]
    assert job["kubernetes_sd_configs"] == [
        {"role": "pod", "kubeconfig_file": "/kubeconfig", "namespaces": {"names": ["bench"]}}]
    assert job["scrape_interval"] == "15s" and job["metrics_path"] == "/metrics"
    assert job["honor_labels"] is False
    assert job["relabel_configs"] == [
        INIT, RUNNING,
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_label_ray_io_is_ray_node",
                                             "__meta_kubernetes_pod_labelpresent_ray_io_is_ray_node"],
         "regex": "(yes);true"},
        OURS,
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": "metrics"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        *TRIAL_TARGET_LABELS,
        # KubeRay's own monitors' label, which Ray's dashboards use.
        {"source_labels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
         "target_label": "ray_io_cluster", "regex": "(.+)", "replacement": "${1}"},
        {"target_label": "job", "replacement": "testbed/tb-testbed-ray"},
        {"target_label": "endpoint", "replacement": "metrics"},
    ]


def test_the_dask_pod_monitor(monitors):
    job = jobs_by_name(monitors)["podMonitor/testbed/tb-testbed-dask/0"]
    assert job["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["bench"]}
    rules = job["relabel_configs"]
    assert rules[2] == {
        "action": "keep", "source_labels": ["__meta_kubernetes_pod_label_dask_org_component",
                                            "__meta_kubernetes_pod_labelpresent_dask_org_component"],
        "regex": "(scheduler|worker);true"}
    assert rules[3] == OURS
    assert rules[4] == {"action": "keep",
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "http-dashboard"}
    job_rule = rules.index({"target_label": "job", "replacement": "testbed/tb-testbed-dask"})
    assert rules[job_rule - 4:job_rule] == TRIAL_TARGET_LABELS
    assert rules[-1] == {"target_label": "endpoint", "replacement": "http-dashboard"}


def test_the_operator_service_monitor(monitors):
    sm = next(m for m in monitors if m["kind"] == "ServiceMonitor")
    job = jobs_by_name(monitors)["serviceMonitor/testbed/tb-testbed/0"]
    # No namespaceSelector: the monitor's (the release's) own namespace; upstream's default role.
    assert job["kubernetes_sd_configs"] == [
        {"role": "endpoints", "kubeconfig_file": "/kubeconfig",
         "namespaces": {"names": [RELEASE_NS]}}]
    rules = job["relabel_configs"]
    labels = sm["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "operator" and len(labels) == 6
    keeps = [{"action": "keep",
              "source_labels": [f"__meta_kubernetes_service_label_{sanitize_label_name(k)}",
                                f"__meta_kubernetes_service_labelpresent_{sanitize_label_name(k)}"],
              "regex": f"({labels[k]});true"} for k in sorted(labels)]
    assert rules[:1 + len(keeps) + 1] == [INIT, *keeps, {
        "action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
        "regex": "metrics"}]
    assert keeps[0]["source_labels"][0] == \
        "__meta_kubernetes_service_label_app_kubernetes_io_component"
    assert {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"} in rules
    assert RUNNING in rules
    # The operator's own `namespace` label (the Benchmark's) wins over the target's.
    assert job["honor_labels"] is True
    assert all(j["honor_labels"] is False for j in jobs_by_name(monitors).values()
               if j["job_name"].startswith("podMonitor/"))
    assert rules[-2:] == [
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
         "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": "metrics"}]
    # The chart's Service for the operator carries exactly the labels the monitor selects.
    svc = next(d for d in render(VALUES, namespace=RELEASE_NS)
               if d["kind"] == "Service" and d["metadata"]["name"] == "tb-testbed-metrics")
    assert labels.items() <= svc["metadata"]["labels"].items()
    assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]


def test_interval_override_and_namespace_any(monitors):
    ms = copy.deepcopy(monitors)
    ms[0]["spec"]["namespaceSelector"] = {"any": True}
    ms[0]["spec"]["podMetricsEndpoints"][0]["scrapeTimeout"] = "10s"
    jobs = scrape_configs(ms, "/kubeconfig", interval="1s")
    assert {j["scrape_interval"] for j in jobs} == {"1s"}
    assert "namespaces" not in jobs[0]["kubernetes_sd_configs"][0]
    assert "scrape_timeout" not in jobs[0]  # 10s > 1s would be rejected by Prometheus


def promtool_check(config: dict, path) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True,
                          text=True, timeout=60)


# The whole config, kubernetes_sd_configs included, is checked by the promtool that
# scripts/cluster.sh builds (Prometheus v3.16.0) and then run against a real cluster in
# tests/cluster/test_real_cluster.py. Debian's promtool (the one on PATH) has no Kubernetes service
# discovery (NEWS.Debian, 1.5.0+ds-1: "Kubernetes support has been completely removed"), so
# here it checks everything else.


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package "
                    "'prometheus'; .ci/run installs it)")
def test_promtool_accepts_everything_but_the_kubernetes_sd(monitors, tmp_path):
    """What a Prometheus built without Kubernetes SD can still check: every job with its
    ``kubernetes_sd_configs`` swapped for an (empty) file SD -- the relabel rules, regexes,
    intervals, paths. The SD block itself is left to tests/cluster/test_real_cluster.py."""
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    for interval in (None, "1s"):
        config = prometheus_config(monitors, str(tmp_path / "kubeconfig"), interval)
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")
            job["file_sd_configs"] = [{"files": [str(targets)]}]
        p = promtool_check(config, tmp_path / "prometheus.yml")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "SUCCESS" in p.stdout + p.stderr


def test_unsupported_operator_and_kind_raise(monitors):
    ms = copy.deepcopy(monitors)
    dask = next(m for m in ms if m["metadata"]["name"].endswith("-dask"))
    dask["spec"]["selector"]["matchExpressions"][0]["operator"] = "Gt"
    with pytest.raises(ValueError, match=r"PodMonitor testbed/tb-testbed-dask: unsupported "
                                         r"matchExpressions operator 'Gt' on key "
                                         r"'dask.org/component'"):
        scrape_configs(ms, "/kubeconfig")
    with pytest.raises(ValueError, match=r"unsupported monitor kind 'Probe'"):
        scrape_configs([{"kind": "Probe", "metadata": {"name": "p", "namespace": "x"}, "spec": {}}],
                       "/kubeconfig")
    ms = copy.deepcopy(monitors)
    ms[0]["spec"][("podMetricsEndpoints" if ms[0]["kind"] == "PodMonitor" else "endpoints")][0][
        "tlsConfig"] = {"insecureSkipVerify": True}
    with pytest.raises(ValueError, match=r"unsupported field\(s\) \['tlsConfig'\]"):
        scrape_configs(ms, "/kubeconfig")


PROMETHEUS = shutil.which("prometheus")


def _pod_target(address: str, name: str, pod_labels: dict[str, str], port: str) -> dict:
    """One pod as Prometheus' Kubernetes SD describes it (discovery/kubernetes/pod.go's meta
    labels), for a file SD: what the PodMonitors' relabel rules see."""
    meta = {"__meta_kubernetes_namespace": "bench", "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_container_name": "c",
            "__meta_kubernetes_pod_container_port_name": port,
            "__meta_kubernetes_pod_phase": "Running"}
    for k, v in pod_labels.items():
        meta[f"__meta_kubernetes_pod_label_{sanitize_label_name(k)}"] = v
        meta[f"__meta_kubernetes_pod_labelpresent_{sanitize_label_name(k)}"] = "true"
    return {"targets": [address], "labels": meta}


def _trial_pods(address: str) -> list[dict]:
    """The pods of a Ray and a Dask trial, labelled by the operator's manifests plus what
    KubeRay and the Dask operator add, and a Ray and a Dask pod the testbed did not make."""
    from bench.spec import parse_spec
    from testbed_operator import manifests

    bm = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
          "metadata": {"name": "cmp", "namespace": "bench", "uid": "u"},
          "spec": {"frameworks": ["ray", "dask"], "workers": [2]}}
    spec = parse_spec(bm["spec"])
    rj = manifests.build_rayjob_manifest(bm, spec, 2, "img")
    head = {**rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"],
            "ray.io/is-ray-node": "yes", "ray.io/node-type": "head",
            "ray.io/cluster": "cmp-ray-2-x7k2p"}  # KubeRay's cluster for the RayJob
    dc = manifests.build_daskcluster_manifest(bm, spec, 2, "img")
    worker = {**dc["metadata"]["labels"], **dc["spec"]["worker"]["metadata"]["labels"],
              "dask.org/cluster-name": "cmp-dask-2", "dask.org/component": "worker"}
    return [_pod_target(address, "cmp-ray-2-head-abc", head, "metrics"),
            _pod_target(address, "other-head-xyz", {"ray.io/is-ray-node": "yes",
                                                     "ray.io/node-type": "head",
                                                     "ray.io/cluster": "other"}, "metrics"),
            _pod_target(address, "cmp-dask-2-worker-0", worker, "http-dashboard"),
            _pod_target(address, "other-scheduler", {"dask.org/component": "scheduler",
                                                     "dask.org/cluster-name": "other"},
                        "http-dashboard")]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package "
                    "'prometheus'; .ci/run installs it)")
def test_a_real_prometheus_keeps_only_the_testbeds_pods_with_trial_labels(monitors, tmp_path):
    """The PodMonitors' rules in a real Prometheus (a file SD stands in for the Kubernetes SD
    Debian's build lacks): of a testbed Ray and Dask pod and a foreign one of each, only the
    testbed's become targets, carrying the trial's labels (and Ray's ``ray_io_cluster``), and
    the dashboard's live selector, with its variables set, finds exactly them."""
    server, _ = OperatorMetrics().serve(port := free_port())  # a real /metrics to scrape
    targets = tmp_path / "pods.json"
    targets.write_text(json.dumps(_trial_pods(f"127.0.0.1:{port}")))
    pods = [m for m in monitors if m["kind"] == "PodMonitor"]
    config = prometheus_config(pods, "/unused", "1s")
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["file_sd_configs"] = [{"files": [str(targets)]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    prom_port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                                stdout=log, stderr=subprocess.STDOUT)

    def api(path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{prom_port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]
        except OSError:
            return {}

    live = LIVE.replace("$namespace", "bench").replace("$benchmark", "cmp").replace(
        "$framework", "ray|dask").replace("$trial", "cmp-ray-2|cmp-dask-2")
    try:
        deadline = time.monotonic() + 60
        while len(up := api("query", query=f"up{{{live}}}").get("result", [])) < 2:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, api("targets")
            time.sleep(0.3)
        got = {r["metric"]["pod"]: r["metric"] for r in up}
        assert set(got) == {"cmp-ray-2-head-abc", "cmp-dask-2-worker-0"}
        ray, dask = got["cmp-ray-2-head-abc"], got["cmp-dask-2-worker-0"]
        assert {k: v for k, v in ray.items() if k.startswith(("testbed_dev_", "ray_io"))} == {
            "testbed_dev_benchmark": "cmp", "testbed_dev_framework": "ray",
            "testbed_dev_workers": "2", "testbed_dev_trial": "cmp-ray-2",
            "ray_io_cluster": "cmp-ray-2-x7k2p"}
        assert dask["testbed_dev_trial"] == "cmp-dask-2" and dask["namespace"] == "bench"
        assert dask["job"] == "testbed/tb-testbed-dask" and ray["job"] == "testbed/tb-testbed-ray"
        # The foreign pods (and each framework's pods in the other's job) are no targets.
        active = api("targets")["activeTargets"]
        assert sorted(t["labels"]["pod"] for t in active) == sorted(got), active
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()
        server.server_close()
