"""The Helm chart, linted and rendered by Helm's own Go SDK (helm-python-sdk; no helm binary
here), every rendered object validated with kubernetes-validate --strict, RBAC asserted
exactly and checked against the API calls the real operator makes."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from support.fake_controllers import FakeControllers, wait_for
from support.operator_harness import benchmark, finished, running_operator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "testbed"
DASKCLUSTERS_PATH = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
K8S = "1.33.0"
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor"}  # prometheus-operator CRs: no offline schema

VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["bench", "ml"], "maxConcurrentTrials": 2},
    "monitoring": {"metrics": {"port": 9100,
                               "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                               "podMonitors": {"enabled": True}},
                   "watchNamespaces": ["bench"]},
    "minimal": {"grafanaDashboard": {"enabled": False}, "runnerNamespaces": ["jobs"],
                "runnerPodFaults": False,
                "image": {"repository": "registry.local/testbed-operator", "tag": "dev",
                          "pullPolicy": "Always"}},
    "network-policy": {"networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        "rayDashboardFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
        "watchNamespaces": ["bench"]},
}


def render(values: dict, namespace: str = "testbed") -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="tb", namespace=namespace)
        docs = [yaml.safe_load(c["data"]) for c in chart.crds]
    for key, text in sorted(out.items()):
        if key.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out = collections.defaultdict(list)
    for d in docs:
        out[d["kind"]].append(d)
    return out


def test_chart_lints_clean():
    result = helm.lint(str(CHART), strict=True)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_validates_strictly(name):
    docs = render(VALUE_SETS[name])
    assert helm.lint(str(CHART), VALUE_SETS[name])["errors"] == []
    for d in docs:
        if d["kind"] in CUSTOM_KINDS:
            assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["spec"]
            continue
        kubernetes_validate.validate(d, K8S, strict=True)
    kinds = by_kind(docs)
    assert len(kinds["Deployment"]) == 1 and len(kinds["CustomResourceDefinition"]) == 1
    assert ("ConfigMap" in kinds) == (name != "minimal")
    assert ("ServiceMonitor" in kinds) == (name == "monitoring")
    assert len(kinds.get("PodMonitor", [])) == (2 if name == "monitoring" else 0)


def test_the_chart_crd_is_byte_identical_to_the_operators():
    assert (CHART / "crds" / "benchmark.yaml").read_bytes() == \
        (ROOT / "operator" / "crds" / "benchmark.yaml").read_bytes()


def test_the_dashboard_configmap_ships_the_generated_dashboard():
    from testbed_operator.dashboard import dashboard_json

    (cm,) = [d for d in render({}) if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["testbed.json"].strip() == dashboard_json().strip()


def test_the_operator_pod_is_restricted_and_configured_from_values():
    docs = render(VALUE_SETS["namespaced"])
    (dep,) = by_kind(docs)["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TESTBED_NAMESPACES"] == "bench,ml" and env["TESTBED_MAX_CONCURRENT_TRIALS"] == "2"
    assert env["TESTBED_METRICS_ADDRESS"] == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env["TESTBED_LIVENESS"] == "http://0.0.0.0:8080/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert dep["spec"]["replicas"] == 1


def test_results_s3_settings_reach_the_operator_from_values_and_a_secret():
    """``resultsS3``: the endpoint and region as boto3's variables, the credentials only as a
    Secret reference (tests/cluster/test_real_cluster.py uploads through them to moto)."""
    (dep,) = by_kind(render({}))["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert not {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} & {e["name"] for e in c["env"]}
    assert "envFrom" not in c
    values = {"resultsS3": {"endpointUrl": "http://minio.minio:9000", "region": "eu-west-1",
                            "credentialsSecret": "results-s3"}}
    (dep,) = by_kind(render(values))["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert c["envFrom"] == [{"secretRef": {"name": "results-s3"}}]


@pytest.mark.parametrize(("values", "message"), [
    ({"maxConcurrentTrials": 0}, "/maxConcurrentTrials"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"imagee": {}}, "imagee"),
    ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ({"runnerPodFaults": "yes"}, "/runnerPodFaults"),
    ({"resultsS3": {"endpointUrl": "minio:9000"}}, "/resultsS3/endpointUrl"),
    ({"resultsS3": {"credentialsSecret": "My_Secret"}}, "/resultsS3/credentialsSecret"),
    ({"resultsS3": {"secretKey": "x"}}, "secretKey"),
    ({"networkPolicy": {"metricsFrom": {"namespaceSelector": {}}}}, "/networkPolicy/metricsFrom"),
    ({"networkPolicy": {"metricsFrom": [{"namespaceSelecter": {}}]}}, "namespaceSelecter"),
    ({"networkPolicy": {"rayDashboardFrom": [{}]}}, "/networkPolicy/rayDashboardFrom/0"),
])
def test_values_are_checked_against_the_schema(values, message):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as e:
        chart.render(values, name="tb", namespace="testbed")
    assert message in str(e.value)


OPERATOR_RULES = {
    ("testbed.dev", "benchmarks"): {"get", "list", "watch", "patch"},
    ("testbed.dev", "benchmarks/status"): {"patch"},
    ("testbed.dev", "benchmarks/finalizers"): {"update"},
    ("ray.io", "rayjobs"): {"create", "get", "list", "delete"},
    ("ray.io", "rayclusters"): {"list", "delete"},
    ("kubernetes.dask.org", "daskclusters"): {"create", "get", "list", "delete"},
    ("batch", "jobs"): {"create", "get", "list", "delete"},
    ("", "configmaps"): {"get", "list", "delete"},
    ("", "resourcequotas"): {"list"},
    ("", "events"): {"create", "list"},
    ("", "pods"): {"list"},
    ("", "serviceaccounts"): {"get"},
}
RUNNER_RULES = {("", "configmaps"): {"create", "patch"}, ("", "pods"): {"list", "delete"},
                ("testbed.dev", "benchmarks/finalizers"): {"update"}}
# Requests made by the operator: Kopf's own, and our client's (testbed_operator.kube.USER_AGENT).
OPERATOR_AGENTS = ("kopf/", "testbed-operator/")
# Not a request of its own: the children's ownerReferences set blockOwnerDeletion, which
# OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc/gc_admission.go) allows only to
# those who may update the owner's finalizers (test_k8s_emulator.py checks it with the
# emulator enforcing RBAC and that rule).
ADMISSION_ONLY = {("testbed.dev", "benchmarks/finalizers"): {"update"}}
NETWORK_POLICY_RULES = {
    ("networking.k8s.io", "networkpolicies"): {"create", "get", "list", "delete"}}


def _rules(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                out[(g, r)] |= set(rule["verbs"])
    return dict(out)


def test_rbac_is_exactly_what_the_operator_and_runner_use():
    cluster = by_kind(render({}))
    (cr,) = cluster["ClusterRole"]
    assert _rules(cr) == OPERATOR_RULES
    assert "Role" in cluster
    assert [r["metadata"]["name"] for r in cluster["Role"]] == ["testbed-runner"]
    assert _rules(cluster["Role"][0]) == RUNNER_RULES
    assert cluster["Role"][0]["metadata"]["namespace"] == "testbed"  # the release namespace
    ns = by_kind(render(VALUE_SETS["namespaced"]))
    assert "ClusterRole" not in ns and "ClusterRoleBinding" not in ns
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): _rules(r) for r in ns["Role"]}
    assert roles == {("bench", "tb-testbed"): OPERATOR_RULES, ("ml", "tb-testbed"): OPERATOR_RULES,
                     ("bench", "testbed-runner"): RUNNER_RULES,
                     ("ml", "testbed-runner"): RUNNER_RULES}
    for rb in ns["RoleBinding"]:
        (subject,) = rb["subjects"]
        assert rb["roleRef"]["name"] == rb["metadata"]["name"]
        assert subject["namespace"] == ("testbed" if rb["metadata"]["name"] == "tb-testbed"
                                        else rb["metadata"]["namespace"])
    sas = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in ns["ServiceAccount"]}
    assert sas == {("testbed", "tb-testbed"), ("bench", "testbed-runner"), ("ml", "testbed-runner")}


def test_runner_may_delete_pods_only_when_fault_injection_is_allowed():
    (role,) = by_kind(render(VALUE_SETS["minimal"]))["Role"]
    assert role["metadata"] == role["metadata"] | {"name": "testbed-runner", "namespace": "jobs"}
    assert _rules(role) == {("", "configmaps"): {"create", "patch"},
                            ("testbed.dev", "benchmarks/finalizers"): {"update"}}


def test_owner_references_block_deletion_so_both_roles_may_update_the_finalizers():
    """Every child (the operator's) and the result ConfigMap (the runner's) points at the
    Benchmark with blockOwnerDeletion: both accounts need update on benchmarks/finalizers."""
    from bench.kube import names
    from testbed_operator import manifests

    bm = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
          "metadata": {"name": "b", "namespace": "ns", "uid": "u"}, "spec": {}}
    assert manifests.owner_reference(bm)["blockOwnerDeletion"] is True
    owner = json.loads(manifests._owner_env(bm)[names.RESULT_OWNER_ENV])
    assert owner["blockOwnerDeletion"] is True
    for values in ({}, VALUE_SETS["namespaced"], VALUE_SETS["minimal"]):
        docs = by_kind(render(values))
        for role in docs.get("ClusterRole", []) + docs["Role"]:
            assert _rules(role)[("testbed.dev", "benchmarks/finalizers")] == {"update"}, \
                role["metadata"]


def _verb(r) -> str:
    method = r.method.value
    if method == "GET":
        return "watch" if r.params.get("watch") in ("true", "True", "1") else (
            "get" if r.name else "list")
    return {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}[method]


async def test_the_operator_uses_only_what_its_role_grants(cluster, tmp_path):
    """Every request the real operator (Kopf and our client) makes in a run with a valid
    Benchmark, an invalid one and a deletion is allowed by the rendered Role; every grant but
    the documented ones is used."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, "ns1", kubeconfig, fast=True), \
            running_operator(k8s.url, "ns1"):
        await api.apply(benchmark("ok", frameworks=["ray", "dask"], workers=[1]))
        await finished(api, "ok", 60)
        await api.apply(benchmark("bad", frameworks=["dask"], workers=[1],
                                  workload={"name": "knn", "params": {"n_neighbors": "x"}}))
        await finished(api, "bad", 60)
        await api.apply(benchmark("gone", frameworks=["dask"], workers=[1]))
        await wait_for(lambda: api.items(DASKCLUSTERS_PATH), 30, "gone's DaskCluster")
        await api.delete("/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks/gone")

        async def deleted():
            return await api.benchmark("gone") is None
        await wait_for(deleted, 30, "the deletion")
    used: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for r in k8s.emulator.history:
        agent = r.headers.get("User-Agent", "")
        if r.resource is None or r.resource.plural is None or not agent.startswith(OPERATOR_AGENTS):
            continue
        res = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        used[(r.resource.group, res)].add(_verb(r))
    used = dict(used)
    for key, verbs in used.items():
        assert verbs <= OPERATOR_RULES.get(key, set()), (key, verbs)
    unused = {k: v - used.get(k, set())
              for k, v in OPERATOR_RULES.items() if v - used.get(k, set())}
    # Granted but not exercised here: RayClusters that KubeRay creates for a RayJob (the
    # emulator has no KubeRay) are deleted with the Benchmark; the finalizers (admission).
    assert unused == {("ray.io", "rayclusters"): {"delete"}, **ADMISSION_ONLY}, unused
    # Our client's writes name the operator as their field manager (managedFields).
    writes = [r for r in k8s.emulator.history if r.method.value in ("POST", "PATCH")
              and r.headers.get("User-Agent", "").startswith("testbed-operator/")]
    assert writes and all(r.params.get("fieldManager") == "testbed-operator" for r in writes)
    # The invalid spec became an Event on its Benchmark (kubectl describe shows it).
    events = await api.items("/api/v1/namespaces/{ns}/events")
    assert any(e["involvedObject"]["name"] == "bad" and "n_neighbors" in e["message"]
               and e["type"] == "Warning" and e["reason"] == "InvalidSpec" for e in events), \
        [(e["involvedObject"], e["message"], e["type"]) for e in events]


def test_the_network_policy_option_reaches_the_operator_and_its_role():
    """networkPolicy.enabled: the operator's environment turns it on (with the peers, read back
    by the operator's own parser) and its Role, cluster-wide or per namespace, gains exactly
    the NetworkPolicy verbs it uses. Off: neither."""
    from testbed_operator.main import config_from_env

    values = VALUE_SETS["network-policy"]
    for vals, on in (({}, False), ({"networkPolicy": {"enabled": False}}, False),
                     (values, True), ({**values, "watchNamespaces": []}, True)):
        docs = by_kind(render(vals))
        want = {**OPERATOR_RULES, **NETWORK_POLICY_RULES} if on else OPERATOR_RULES
        roles = [r for r in docs.get("ClusterRole", []) + docs.get("Role", [])
                 if r["metadata"]["name"] == "tb-testbed"]
        assert roles and all(_rules(r) == want for r in roles), vals
        (dep,) = docs["Deployment"]
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert {k for k in env if "NETWORK_POLICY" in k} == ({
            "TESTBED_NETWORK_POLICY", "TESTBED_NETWORK_POLICY_METRICS_FROM",
            "TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM"} if on else set())
        with pytest.MonkeyPatch.context() as mp:
            for k in list(env):
                mp.setenv(k, env[k])
            config = config_from_env()
        assert config.network_policy is on
        if on:
            assert config.network_policy_metrics_from == vals["networkPolicy"]["metricsFrom"]
            assert config.network_policy_ray_dashboard_from == \
                vals["networkPolicy"]["rayDashboardFrom"]
    # The default peer for the Ray dashboard is the KubeRay operator, the same as the operator's.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM", raising=False)
        default = config_from_env().network_policy_ray_dashboard_from
    chart_default = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    assert chart_default["enabled"] is False and chart_default["rayDashboardFrom"] == default


async def test_with_network_policies_the_operator_uses_exactly_its_role(cluster):
    """The same check as above with networkPolicy.enabled, and a trial retried after a crash
    (so the operator waits for the policy to be gone): every NetworkPolicy verb granted is
    used, nothing else."""
    k8s, api, kubeconfig = cluster
    docs = by_kind(render(VALUE_SETS["network-policy"]))
    (role,) = [r for r in docs["Role"] if r["metadata"]["name"] == "tb-testbed"]
    granted = _rules(role)
    async with FakeControllers(k8s.url, "ns1", kubeconfig, fast=True, crash={"np-dask-1": 1}), \
            running_operator(k8s.url, "ns1", network_policy=True):
        await api.apply(benchmark("np", frameworks=["ray", "dask"], workers=[1], trialRetries=1))
        obj = await finished(api, "np", 60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
        assert [t["attempts"] for t in obj["status"]["trials"]] == [1, 2]
        await api.apply(benchmark("gone", frameworks=["dask"], workers=[1]))
        await wait_for(lambda: api.items(DASKCLUSTERS_PATH), 30, "gone's DaskCluster")

        async def finalized():  # else the deletion may skip the operator's delete handler
            return ((await api.benchmark("gone")) or {}).get("metadata", {}).get("finalizers")
        await wait_for(finalized, 30, "gone's finalizer")
        await api.delete("/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks/gone")

        async def cleaned():
            return (await api.benchmark("gone") is None and not await api.items(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"))
        await wait_for(cleaned, 30, "the deletion and its policy's")
    used: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for r in k8s.emulator.history:
        if r.resource is None or r.resource.plural is None or not r.headers.get(
                "User-Agent", "").startswith(OPERATOR_AGENTS):
            continue
        used[(r.resource.group,
              r.resource.plural + (f"/{r.subresource}" if r.subresource else ""))].add(_verb(r))
    for key, verbs in used.items():
        assert verbs <= granted.get(key, set()), (key, verbs)
    assert used[("networking.k8s.io", "networkpolicies")] == NETWORK_POLICY_RULES[
        ("networking.k8s.io", "networkpolicies")]
