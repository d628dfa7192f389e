"""tests/support/prom_monitors.py: the chart's PodMonitors and ServiceMonitor, rendered by Helm's
Go SDK, translated to plain Prometheus scrape jobs the way the Prometheus Operator generates them,
checked rule by rule and by ``promtool check config``. No cluster needed."""
from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml
from test_chart import render

from support.prom_monitors import prometheus_config, sanitize_label_name, scrape_configs

PROMTOOL = shutil.which("promtool")
VALUES = {"metrics": {"podMonitors": {"enabled": True}, "serviceMonitor": {"enabled": True}},
          "watchNamespaces": ["bench"]}
RELEASE_NS = "testbed"
INIT = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
RUNNING = {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
           "regex": "(Failed|Succeeded)"}


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
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
         "regex": "metrics"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
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
    assert rules[3] == {"action": "keep",
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": "http-dashboard"}
    assert {"target_label": "job", "replacement": "testbed/tb-testbed-dask"} in rules
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
