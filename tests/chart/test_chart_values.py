"""The chart's values after KubeRay's and dask-kubernetes' charts (nameOverride,
fullnameOverride, serviceAccount, imagePullSecrets, security contexts, priorityClassName,
monitor labels, runnerImage as a map or the deprecated string), each rendered by Helm's Go SDK
and asserted in the manifests; the chart's README generated from values.yaml."""
from __future__ import annotations

import importlib.util
import shutil
import tarfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from test_chart import CHART, CUSTOM_KINDS, K8S, by_kind, render

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" / "chart_readme.py")
assert _spec and _spec.loader
chart_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chart_readme)


def notes(values: dict) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="tb", namespace="testbed")
    return next(text for key, text in out.items() if key.endswith("NOTES.txt"))


def operator_pod(values: dict) -> dict:
    (dep,) = by_kind(render(values))["Deployment"]
    return dep["spec"]["template"]["spec"]


def env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def test_every_new_value_renders_valid_objects():
    values = {"nameOverride": "bench", "serviceAccount": {"create": True, "name": "op"},
              "imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "high",
              "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 2000},
              "securityContext": {"readOnlyRootFilesystem": True, "runAsNonRoot": True},
              "runnerImage": {"repository": "reg.local/runner", "tag": "v2"},
              "metrics": {"serviceMonitor": {"enabled": True, "additionalLabels": {"r": "k"}},
                          "podMonitors": {"enabled": True, "additionalLabels": {"r": "k"}}}}
    assert helm.lint(str(CHART), values, strict=True)["errors"] == []
    for d in render(values):
        if d["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(d, K8S, strict=True)


def test_name_overrides_rename_the_objects_and_their_labels():
    docs = render({"nameOverride": "bench"})
    (dep,) = by_kind(docs)["Deployment"]
    assert dep["metadata"]["name"] == "tb-bench"
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "bench"
    (svc,) = by_kind(docs)["Service"]
    assert svc["metadata"]["name"] == "tb-bench-metrics"
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    docs = by_kind(render({"fullnameOverride": "testbed-operator", "nameOverride": "x"}))
    assert {d["metadata"]["name"] for d in docs["Deployment"] + docs["ClusterRole"]} == {
        "testbed-operator"}
    assert docs["ConfigMap"][0]["metadata"]["name"] == "testbed-operator-dashboard"
    # The runners' account and Role keep their fixed name: the operator's manifests name it.
    assert {d["metadata"]["name"] for d in docs["Role"]} == {"testbed-runner"}


@pytest.mark.parametrize(("sa", "name", "created"), [
    ({}, "tb-testbed", True),
    ({"name": "op"}, "op", True),
    ({"create": False, "name": "existing"}, "existing", False),
    ({"create": False}, "default", False),
])
def test_service_account_create_and_name(sa, name, created):
    docs = by_kind(render({"serviceAccount": sa, "watchNamespaces": ["bench"]}))
    (dep,) = docs["Deployment"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == name
    accounts = {d["metadata"]["name"] for d in docs["ServiceAccount"]}
    assert (name in accounts) is created and "testbed-runner" in accounts
    (binding,) = [b for b in docs["RoleBinding"] if b["metadata"]["name"] == "tb-testbed"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                    "namespace": "testbed"}]
    (cluster,) = by_kind(render({"serviceAccount": sa}))["ClusterRoleBinding"]
    assert cluster["subjects"][0]["name"] == name


def test_pull_secrets_priority_and_security_contexts():
    pod = operator_pod({})
    assert "imagePullSecrets" not in pod and "priorityClassName" not in pod
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                      "runAsGroup": 1000, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    pod = operator_pod({"imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "high",
                        "podSecurityContext": {"runAsUser": 4242, "fsGroup": None},
                        "securityContext": {"readOnlyRootFilesystem": None}})
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "high"
    # Helm merges maps with the defaults; null removes a key.
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 4242,
                                      "runAsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_runner_image_map_and_deprecated_string_forms():
    assert env(operator_pod({}))["TESTBED_DEFAULT_IMAGE"] == "testbed-runner:0.1.0"
    got = env(operator_pod({"runnerImage": {"repository": "reg.local/runner", "tag": "v2"}}))
    assert got["TESTBED_DEFAULT_IMAGE"] == "reg.local/runner:v2"
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    got = env(operator_pod({"runnerImage": {"repository": "r", "tag": ""}}))
    assert got["TESTBED_DEFAULT_IMAGE"] == f"r:{app_version}"
    # The old string form (tests/cluster and scripts/kind-up.sh pass one) works, with a warning.
    got = env(operator_pod({"runnerImage": "reg.local/runner:old"}))
    assert got["TESTBED_DEFAULT_IMAGE"] == "reg.local/runner:old"
    assert "DEPRECATED: runnerImage as one string" in notes({"runnerImage": "r:1"})
    assert "DEPRECATED" not in notes({})


def test_monitor_additional_labels_and_the_deprecated_labels():
    values = {"metrics": {"serviceMonitor": {"enabled": True, "additionalLabels": {"release": "a"}},
                          "podMonitors": {"enabled": True,
                                          "additionalLabels": {"release": "kps", "team": "x"},
                                          "labels": {"team": "old", "legacy": "1"}}}}
    docs = by_kind(render(values))
    (sm,) = docs["ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "a"
    for pm in docs["PodMonitor"]:
        labels = pm["metadata"]["labels"]
        assert labels["release"] == "kps" and labels["team"] == "x" and labels["legacy"] == "1"
        assert labels["app.kubernetes.io/name"] == "testbed"
    assert "DEPRECATED: metrics.serviceMonitor.labels" in notes(values)


def test_pod_monitors_select_trials_and_copy_their_labels():
    docs = by_kind(render({"metrics": {"podMonitors": {"enabled": True}}}))
    mons = {pm["metadata"]["name"]: pm["spec"] for pm in docs["PodMonitor"]}
    trial = {"key": "testbed.dev/trial", "operator": "Exists"}
    want = ["testbed.dev/benchmark", "testbed.dev/framework", "testbed.dev/workers",
            "testbed.dev/trial"]
    assert trial in mons["tb-testbed-ray"]["selector"]["matchExpressions"]
    assert mons["tb-testbed-ray"]["podTargetLabels"] == [*want, "ray.io/cluster"]
    assert trial in mons["tb-testbed-dask"]["selector"]["matchExpressions"]
    assert mons["tb-testbed-dask"]["podTargetLabels"] == want


@pytest.mark.parametrize(("values", "message"), [
    ({"runnerImage": {"repo": "x"}}, "/runnerImage"),
    ({"runnerImage": ""}, "/runnerImage"),
    ({"serviceAccount": {"create": "yes"}}, "/serviceAccount/create"),
    ({"imagePullSecrets": ["regcred"]}, "/imagePullSecrets/0"),
    ({"nameOverride": "Bad_Name"}, "/nameOverride"),
    ({"metrics": {"podMonitors": {"additionalLabels": {"a": 1}}}},
     "/metrics/podMonitors/additionalLabels/a"),
])
def test_new_values_are_checked_against_the_schema(values, message):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as e:
        chart.render(values, name="tb", namespace="testbed")
    assert message in str(e.value)


def test_the_readme_is_generated_from_values_and_documents_every_value():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    assert readme == chart_readme.render_readme(text, chart)
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    for key in yaml.safe_load(text):
        assert key in rows or any(r.startswith(key + ".") for r in rows), key
    assert "runnerImage.repository" in rows and "metrics.podMonitors.additionalLabels" in rows
    # An undocumented value is an error naming it.
    with pytest.raises(ValueError, match=r"no '# --' description for newValue, other\.key"):
        chart_readme.render_readme(text + "newValue: 1\n# a note, not docs\nother:\n  key: 2\n",
                                   chart)


def test_helmignore_keeps_editor_and_vcs_files_out_of_the_package(tmp_path):
    chart = tmp_path / "testbed"
    shutil.copytree(CHART, chart)
    for junk in ("x.swp", "y.bak", ".idea/workspace.xml"):
        (chart / junk).parent.mkdir(exist_ok=True)
        (chart / junk).write_text("junk")
    packaged = helm.package(str(chart), destination=str(tmp_path))
    with tarfile.open(packaged) as tar:
        names = tar.getnames()
    assert "testbed/README.md" in names and "testbed/values.yaml" in names
    assert not [n for n in names if n.endswith((".swp", ".bak", ".xml"))], names
