"""The Benchmark CRD and the manifests the operator applies, validated against the real schemas:
Kubernetes core types (kubernetes-validate), KubeRay v1.7.0 CRDs (../shared/schemas/kuberay,
read in place) and the Dask CRDs shipped inside the dask-kubernetes wheel."""
import copy
import json
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from bench.kube import names
from bench.spec import BenchmarkSpec, parse_spec
from testbed_operator import manifests as m
from testbed_operator.crd import build_crd, crd_yaml

from support.k8s_emulator import openapi_to_jsonschema

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT.parent / "shared" / "schemas" / "kuberay"
K8S = "1.33.0"

BENCHMARK = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
             "metadata": {"name": "digits-knn", "namespace": "bench", "uid": "1234-abcd"},
             "spec": {"frameworks": ["ray", "dask"], "workers": [1, 2],
                      "workload": {"name": "knn"}}}
IMAGE = "testbed-runner:0.1.0"


def _crd_validator(crd, version):
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return jsonschema.Draft4Validator(openapi_to_jsonschema(ver["schema"]["openAPIV3Schema"]))


def _errors(validator, obj):
    return sorted(f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj))


@pytest.fixture(scope="module")
def benchmark_schema():
    return _crd_validator(build_crd(), "v1alpha1")


def test_crd_file_matches_the_generator():
    assert (ROOT / "operator" / "crds" / "benchmark.yaml").read_text() == crd_yaml(), \
        "regenerate: python -m testbed_operator.crd > operator/crds/benchmark.yaml"


def test_crd_is_a_valid_customresourcedefinition():
    kubernetes_validate.validate(build_crd(), K8S, strict=True)
    ver = build_crd()["spec"]["versions"][0]
    assert ver["subresources"] == {"status": {}}
    columns = ver["additionalPrinterColumns"]
    assert [(c["name"], c.get("priority", 0)) for c in columns] == [
        ("Phase", 0), ("Workload", 0), ("Frameworks", 0), ("Progress", 0), ("Age", 0),
        ("Trial", 1), ("Message", 1)]  # priority 1: `kubectl get benchmarks -o wide` only
    assert build_crd()["spec"]["names"]["categories"] == ["all"]
    status = ver["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    conditions = status["conditions"]
    # Merged by type (server-side apply, kubectl wait), shaped like metav1.Condition.
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {"type", "status", "lastTransitionTime",
                                                    "reason", "message"}
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    for column in columns:
        assert (column["jsonPath"].split(".")[-1] in status
                or column["jsonPath"].startswith(".metadata"))
    spec = ver["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["frameworks"]["items"]["enum"] == ["local", "ray", "dask", "dask-on-ray",
                                                     "dask-threads", "dask-processes",
                                                     "dask-synchronous"]
    assert "knn" in spec["workloads"]["items"]["properties"]["name"]["enum"]
    assert spec["workers"]["items"]["minimum"] == 0 and spec["workers"]["items"]["exclusiveMinimum"]
    assert spec["repeats"]["minimum"] == 1


def test_every_example_benchmark_validates(benchmark_schema):
    examples = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    resources = [e for e in examples if e.get("kind") == "Benchmark"]
    bare = [{"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
             "metadata": {"name": e["name"]}, "spec": {k: v for k, v in e.items() if k != "name"}}
            for e in examples if "kind" not in e]
    assert len(resources) + len(bare) == len(examples) >= 4
    for obj in resources + bare:
        assert _errors(benchmark_schema, obj) == [], obj["metadata"]["name"]
        parse_spec(obj)  # and the engine's model accepts it too


def test_the_default_spec_round_trips_through_the_schema(benchmark_schema):
    data = BenchmarkSpec().model_dump(by_alias=True, exclude_none=True)
    data.pop("name")
    assert _errors(benchmark_schema, {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
                                      "metadata": {"name": "x"}, "spec": data}) == []


@pytest.mark.parametrize(("patch", "where"), [
    ({"frameworks": ["spark"]}, "spec/frameworks/0"),
    ({"workers": [0]}, "spec/workers/0"),
    ({"repeats": 0}, "spec/repeats"),
    ({"workload": {"name": "sorting"}}, "spec/workload/name"),
    ({"dataset": {"name": "imagenet"}}, "spec/dataset/name"),
    ({"timeoutSeconds": "soon"}, "spec/timeoutSeconds"),
    ({"failurePolicy": "retry"}, "spec/failurePolicy"),
])
def test_the_schema_rejects_bad_specs_at_the_field(benchmark_schema, patch, where):
    obj = copy.deepcopy(BENCHMARK)
    obj["spec"].update(patch)
    errs = _errors(benchmark_schema, obj)
    assert errs and errs[0].startswith(where), errs


def _kuberay(name):
    path = KUBERAY / name
    if not path.exists():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY} (../shared/schemas/kuberay)")
    return _crd_validator(yaml.safe_load(path.read_text()), "v1")


def _dask(name):
    import dask_kubernetes

    path = (Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds" / name)
    return _crd_validator(yaml.safe_load(path.read_text()), "v1")


@pytest.mark.parametrize("workers", [1, 4])
def test_raycluster_and_rayjob_validate_against_kuberay(workers):
    spec = parse_spec(BENCHMARK)
    rc = m.build_raycluster_manifest(BENCHMARK, spec, workers, IMAGE)
    assert _errors(_kuberay("ray.io_rayclusters.yaml"), rc) == []
    group = rc["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == workers
    assert rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    rj = m.build_rayjob_manifest(BENCHMARK, spec, workers, IMAGE)
    assert _errors(_kuberay("ray.io_rayjobs.yaml"), rj) == []
    assert rj["spec"]["submissionMode"] == "K8sJobMode" and rj["spec"]["shutdownAfterJobFinishes"]
    for obj in (rc, rj):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
        for pod in _pods(obj):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                          "metadata": {"name": "p"}, "spec": pod}, K8S, strict=True)


def test_ray_version_is_the_runner_images_ray_pin():
    """rayVersion comes from the one pin (pyproject.toml's ray[default]==X), which is also the
    Ray installed here and in the runner image. KubeRay keys its probes on it (pod.go)."""
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.startswith("ray[")]
    (pin,) = pins
    version = pin.split("==")[1]
    assert m.runner_ray_version() == version == importlib.metadata.version("ray")
    spec = parse_spec(BENCHMARK)
    for obj in (m.build_rayjob_manifest(BENCHMARK, spec, 1, IMAGE)["spec"]["rayClusterSpec"],
                m.build_raycluster_manifest(BENCHMARK, spec, 1, IMAGE)["spec"]):
        assert obj["rayVersion"] == version
        # KubeRay >= 1.6 (common/pod.go supportsUnifiedHealthCheck): Ray >= 2.53.0 gets HTTP
        # probes, no `wget` in the image needed; token auth needs >= 2.52.0 (validation.go).
        assert tuple(map(int, version.split(".")[:2])) >= (2, 53)
        for group in [obj["headGroupSpec"], *obj["workerGroupSpecs"]]:
            (c,) = group["template"]["spec"]["containers"]
            assert "livenessProbe" not in c and "readinessProbe" not in c  # KubeRay's own


@pytest.mark.parametrize("mode", ["token", "disabled"])
def test_ray_token_auth_follows_the_spec(mode):
    """spec.ray.authMode becomes the cluster's authOptions; KubeRay does the rest (a Secret
    and RAY_AUTH_MODE/RAY_AUTH_TOKEN in every Ray container and the submitter). Disabled:
    RAY_AUTH_MODE=disabled on the Ray containers, so no token file in the image turns it on."""
    b = copy.deepcopy(BENCHMARK)
    if mode == "disabled":
        b["spec"]["ray"] = {"authMode": "disabled"}
    spec = parse_spec(b)
    assert spec.ray.auth_mode == mode  # the default is token
    for fw in ("ray", "dask-on-ray"):
        rj = m.build_rayjob_manifest(b, spec, 2, IMAGE, fw)
        assert _errors(_kuberay("ray.io_rayjobs.yaml"), rj) == []
        rcs = rj["spec"]["rayClusterSpec"]
        assert rcs["authOptions"] == {"mode": mode}
        containers = [rcs["headGroupSpec"]["template"]["spec"]["containers"][0],
                      rcs["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]]
        for c in containers:
            env = _env(c)
            assert env.get("RAY_AUTH_MODE") == (None if mode == "token" else "disabled")
            assert "RAY_AUTH_TOKEN" not in env  # never a literal token in a manifest
        assert "RAY_AUTH" not in json.dumps(rj["spec"]["submitterPodTemplate"])
    rc = m.build_raycluster_manifest(b, spec, 2, IMAGE)
    assert rc["spec"]["authOptions"] == {"mode": mode}
    assert _errors(_kuberay("ray.io_rayclusters.yaml"), rc) == []


def _pods(obj):
    spec = obj["spec"].get("rayClusterSpec", obj["spec"])
    yield spec["headGroupSpec"]["template"]["spec"]
    for g in spec["workerGroupSpecs"]:
        yield g["template"]["spec"]


def test_rayjob_entrypoint_is_the_runner_with_the_spec_quoted():
    hostile = copy.deepcopy(BENCHMARK)
    hostile["spec"]["dataset"] = {"name": "file", "path": "/data/x.csv'; rm -rf / #\"$(id)"}
    spec = parse_spec(hostile)
    rj = m.build_rayjob_manifest(hostile, spec, 2, IMAGE)
    argv = shlex.split(rj["spec"]["entrypoint"])
    assert argv[:8] == ["testbed", "runner", "--framework", "ray", "--workers", "2",
                        "--address", "auto"]
    assert argv[8] == "--spec-json"
    again = parse_spec(json.loads(argv[9]))
    assert again.dataset.path == spec.dataset.path and again.baselines is False
    assert again.workloads == spec.workloads
    # Results go to the trial's ConfigMap, written with the runner's service account.
    assert argv[10:] == ["--result-configmap", "bench/digits-knn-ray-2-result"]
    assert rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
        "serviceAccountName"] == "testbed-runner"
    env = yaml.safe_load(rj["spec"]["runtimeEnvYAML"])["env_vars"]
    assert json.loads(env["TESTBED_RESULT_OWNER"])["uid"] == "1234-abcd"
    assert env["TESTBED_STARTUP_TIMEOUT_SECONDS"] == str(m.startup_timeout_seconds(BENCHMARK))


@pytest.mark.parametrize("workers", [1, 6])
def test_daskcluster_validates_against_the_dask_kubernetes_crd(workers):
    spec = parse_spec(BENCHMARK)
    dc = m.build_daskcluster_manifest(BENCHMARK, spec, workers, IMAGE)
    assert _errors(_dask("daskcluster.yaml"), dc) == []
    assert dc["spec"]["worker"]["replicas"] == workers
    for pod in (dc["spec"]["worker"]["spec"], dc["spec"]["scheduler"]["spec"]):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                      "spec": pod}, K8S, strict=True)
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": dc["spec"]["scheduler"]["service"]}
    kubernetes_validate.validate(svc, K8S, strict=True)


def test_runner_job_validates_and_runs_the_runner_as_non_root():
    spec = parse_spec(BENCHMARK)
    address = m.dask_scheduler_address(BENCHMARK, 2)
    assert address == "tcp://digits-knn-dask-2-scheduler.bench.svc:8786"
    job = m.build_runner_job_manifest(BENCHMARK, spec, "dask", 2, IMAGE, address)
    kubernetes_validate.validate(job, K8S, strict=True)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][:8] == ["testbed", "runner", "--framework", "dask", "--workers", "2",
                             "--address", address]
    assert (pod["securityContext"]["runAsNonRoot"]
            and not c["securityContext"]["allowPrivilegeEscalation"])
    assert (c["securityContext"]["readOnlyRootFilesystem"]
            and c["securityContext"]["capabilities"] == {"drop": ["ALL"]})
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    # The runner starts when the DaskCluster is Running (before its pods may exist): it may
    # wait startupTimeoutSeconds for the workers, then run.
    assert job["spec"]["activeDeadlineSeconds"] == (m.startup_timeout_seconds(BENCHMARK)
                                                    + m.run_deadline_seconds(spec))
    assert m.run_deadline_seconds(spec) == spec.timeout_seconds + 120
    assert c["args"][-2:] == ["--result-configmap", "bench/digits-knn-dask-2-result"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert json.loads(env["TESTBED_RESULT_OWNER"])["name"] == "digits-knn"
    assert env["TESTBED_STARTUP_TIMEOUT_SECONDS"] == str(m.startup_timeout_seconds(BENCHMARK))


@pytest.mark.parametrize("name", ["digits-knn", "a" * 63, "9lives", "x"])
def test_trial_names_are_short_dns_labels(name):
    for fw in ("ray", "dask", "dask-on-ray"):
        n = names.trial_name(name, fw, 128)
        assert len(n) <= 40 and n[0].isalpha() and n == n.lower()
        assert all(ch.isalnum() or ch == "-" for ch in n) and not n.endswith("-")
    assert names.trial_name("a" * 63, "ray", 1) != names.trial_name("a" * 63, "ray", 2)


def test_credentials_come_from_a_secret_reference_and_ports_stay_inside_the_cluster():
    b = copy.deepcopy(BENCHMARK)
    b["spec"]["credentialsSecret"] = "s3-creds"
    b["spec"]["dataset"] = {"name": "s3", "uri": "s3://data/digits.npz"}
    spec = parse_spec(b)
    rj = m.build_rayjob_manifest(b, spec, 2, IMAGE)
    head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert (head["template"]["spec"]["containers"][0]["envFrom"]
            == [{"secretRef": {"name": "s3-creds"}}])
    # Workers read partitioned datasets from S3 themselves: they get the same reference.
    ray_worker = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert ray_worker["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    dask_worker = m.build_daskcluster_manifest(b, spec, 2, IMAGE)["spec"]["worker"]["spec"]
    assert dask_worker["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    job = m.build_runner_job_manifest(b, spec, "dask", 2, IMAGE, "tcp://x:8786")
    runner = job["spec"]["template"]["spec"]["containers"][0]
    assert runner["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    kubernetes_validate.validate(job, K8S, strict=True)
    text = json.dumps([rj, job])
    assert "AWS_SECRET_ACCESS_KEY" not in text  # only the reference travels
    # Dashboards and ports are cluster-internal: no NodePort/LoadBalancer anywhere.
    dc = m.build_daskcluster_manifest(b, spec, 2, IMAGE)
    assert (head["serviceType"] == "ClusterIP"
            and dc["spec"]["scheduler"]["service"]["type"] == "ClusterIP")


# -- the trial's NetworkPolicy ------------------------------------------------------------------
PROMETHEUS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
KUBERAY_OPERATOR = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
    "app.kubernetes.io/component": "kuberay-operator"}}}]


def _selects(selector, labels):
    assert set(selector) == {"matchLabels"}, selector  # all the policy uses
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def _trial_pod_labels(benchmark, framework, workers):
    """The labels of every pod of a trial, as the controllers will stamp them: the pod
    templates' own labels (KubeRay and the Job controller add theirs on top), and for Dask the
    DaskCluster's labels merged with the scheduler's/workers' ``metadata.labels``."""
    spec = parse_spec(benchmark)
    if framework in ("ray", "dask-on-ray"):
        rj = m.build_rayjob_manifest(benchmark, spec, workers, IMAGE, framework)
        rcs = rj["spec"]["rayClusterSpec"]
        templates = [rcs["headGroupSpec"]["template"],
                     *(g["template"] for g in rcs["workerGroupSpecs"]),
                     rj["spec"]["submitterPodTemplate"]]
        return {f"pod{i}": t["metadata"]["labels"] for i, t in enumerate(templates)}
    dc = m.build_daskcluster_manifest(benchmark, spec, workers, IMAGE)
    job = m.build_runner_job_manifest(benchmark, spec, framework, workers, IMAGE,
                                      m.dask_scheduler_address(benchmark, workers))
    return {"scheduler": {**dc["metadata"]["labels"],
                          **dc["spec"]["scheduler"]["metadata"]["labels"]},
            "worker": {**dc["metadata"]["labels"], **dc["spec"]["worker"]["metadata"]["labels"]},
            "runner": job["spec"]["template"]["metadata"]["labels"]}


@pytest.mark.parametrize("framework", ["ray", "dask", "dask-on-ray"])
def test_the_networkpolicy_admits_exactly_the_trials_own_pods(framework):
    policy = m.build_networkpolicy_manifest(BENCHMARK, framework, 2, PROMETHEUS, KUBERAY_OPERATOR)
    kubernetes_validate.validate(policy, K8S, strict=True)
    assert policy["metadata"]["name"] == names.trial_name("digits-knn", framework, 2)
    assert policy["metadata"]["labels"] == m.labels("digits-knn", framework, 2)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "1234-abcd"
    spec = policy["spec"]
    # Ingress only: egress stays open (API server, S3).
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    own, *others = spec["ingress"]
    assert "ports" not in own and len(own["from"]) == 1
    peer = own["from"][0]["podSelector"]
    pods = _trial_pod_labels(BENCHMARK, framework, 2)
    assert len(pods) >= 3
    for what, labels in pods.items():
        assert _selects(spec["podSelector"], labels), what   # every pod is protected
        assert _selects(peer, labels), what                  # and may talk to the others
    # Pods of any other trial are neither selected nor admitted.
    other_name = copy.deepcopy(BENCHMARK)
    other_name["metadata"]["name"] = "digits-knn2"
    for bm, fw, w in [(BENCHMARK, framework, 1),
                      (BENCHMARK, "dask" if framework != "dask" else "ray", 2),
                      (other_name, framework, 2)]:
        for what, labels in _trial_pod_labels(bm, fw, w).items():
            assert not _selects(spec["podSelector"], labels) and not _selects(peer, labels), (
                fw, w, what)
    # Prometheus reaches the metrics ports only; KubeRay only the Ray dashboard (Ray trials).
    metrics = others[0]
    assert metrics["from"] == PROMETHEUS
    assert {p["port"] for p in metrics["ports"]} == {8080, 8787, 8788}
    if framework == "dask":
        assert len(others) == 1
    else:
        (dashboard,) = others[1:]
        assert dashboard == {"from": KUBERAY_OPERATOR, "ports": [{"protocol": "TCP", "port": 8265}]}


def test_the_networkpolicy_ports_are_the_ports_the_pods_serve_metrics_on():
    spec = parse_spec(BENCHMARK)
    rj = m.build_rayjob_manifest(BENCHMARK, spec, 1, IMAGE)
    dc = m.build_daskcluster_manifest(BENCHMARK, spec, 1, IMAGE)
    rcs = rj["spec"]["rayClusterSpec"]
    named = {}
    for pod in (rcs["headGroupSpec"]["template"]["spec"],
                rcs["workerGroupSpecs"][0]["template"]["spec"],
                dc["spec"]["scheduler"]["spec"], dc["spec"]["worker"]["spec"]):
        for port in pod["containers"][0]["ports"]:
            named.setdefault(port["name"], set()).add(port["containerPort"])
    # The ports the chart's PodMonitors scrape (`metrics`, `http-dashboard`) and KubeRay's.
    assert named["metrics"] | named["http-dashboard"] == set(m.METRICS_PORTS)
    assert named["dashboard"] == {m.RAY_DASHBOARD_PORT}
    # Without peers, only the trial's own pods get in.
    policy = m.build_networkpolicy_manifest(BENCHMARK, "ray", 1)
    kubernetes_validate.validate(policy, K8S, strict=True)
    assert len(policy["spec"]["ingress"]) == 1


def test_the_submitter_pod_is_kuberays_default_plus_labels_and_the_restricted_context():
    spec = parse_spec(BENCHMARK)
    rj = m.build_rayjob_manifest(BENCHMARK, spec, 2, IMAGE)
    tpl = rj["spec"]["submitterPodTemplate"]
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                  "metadata": {"name": "t"},
                                  "template": tpl}, K8S, strict=True)
    (c,) = tpl["spec"]["containers"]
    assert "command" not in c and "args" not in c  # KubeRay fills in `ray job submit ...`
    assert c["image"] == IMAGE and tpl["spec"]["restartPolicy"] == "Never"
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "200Mi"},
                              "limits": {"cpu": "1", "memory": "1Gi"}}
    assert (tpl["spec"]["securityContext"]["runAsNonRoot"]
            and c["securityContext"]["capabilities"] == {"drop": ["ALL"]})
    assert tpl["metadata"]["labels"][names.TRIAL_LABEL] == "digits-knn-ray-2"


def _env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _label_selector(text):
    return {"matchLabels": dict(part.split("=", 1) for part in text.split(","))}


@pytest.mark.parametrize("framework", ["ray", "dask"])
def test_faults_and_framework_settings_reach_the_pods(framework):
    bm = copy.deepcopy(BENCHMARK)
    bm["spec"].update(faults={"killWorkers": 1, "killHead": True},
                      ray={"maxRetries": 1, "healthCheckPeriodMs": 700,
                           "healthCheckFailureThreshold": 4},
                      dask={"allowedFailures": 5, "nanny": False})
    spec = parse_spec(bm)
    if framework == "ray":
        rj = m.build_rayjob_manifest(bm, spec, 2, IMAGE)
        head = rj["spec"]["rayClusterSpec"]["headGroupSpec"]
        env = _env(head["template"]["spec"]["containers"][0])
        # The GCS's failure detection, as the spec says.
        assert env["RAY_health_check_period_ms"] == "700"
        assert env["RAY_health_check_failure_threshold"] == "4"
        runner_env = env  # the driver runs on the head
        # KubeRay stamps ray.io/node-type on the pods it makes from these templates.
        worker_template = rj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
        worker_pod = {**worker_template["metadata"]["labels"], "ray.io/node-type": "worker"}
        head_pod = {**head["template"]["metadata"]["labels"], "ray.io/node-type": "head"}
        # maxRetries travels in the runner's spec (the driver applies it).
        assert '"maxRetries": 1' in rj["spec"]["entrypoint"]
    else:
        dc = m.build_daskcluster_manifest(bm, spec, 2, IMAGE)
        scheduler = dc["spec"]["scheduler"]["spec"]["containers"][0]
        worker = dc["spec"]["worker"]["spec"]["containers"][0]
        assert _env(scheduler)["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] == "5"
        assert "--no-nanny" in worker["args"] and "--nanny" not in worker["args"]
        job = m.build_runner_job_manifest(bm, spec, framework, 2, IMAGE,
                                          m.dask_scheduler_address(bm, 2))
        runner_env = _env(job["spec"]["template"]["spec"]["containers"][0])
        labels = dc["metadata"]["labels"]
        worker_pod = {**labels, **dc["spec"]["worker"]["metadata"]["labels"],
                      "dask.org/component": "worker"}
        head_pod = {**labels, **dc["spec"]["scheduler"]["metadata"]["labels"],
                    "dask.org/component": "scheduler"}
    targets = json.loads(runner_env[names.FAULT_PODS_ENV])
    assert targets["namespace"] == "bench"
    # The selectors pick this trial's workers and head, and nothing of another trial.
    assert _selects(_label_selector(targets["workers"]), worker_pod)
    assert not _selects(_label_selector(targets["workers"]), head_pod)
    assert _selects(_label_selector(targets["head"]), head_pod)
    for what, labels in _trial_pod_labels(BENCHMARK, framework, 1).items():
        assert not _selects(_label_selector(targets["workers"]), labels), what
    assert targets["identity"] == ("podIP" if framework == "ray" else "env:DASK_WORKER_NAME")


def test_no_fault_targets_without_faults():
    spec = parse_spec(BENCHMARK)
    rj = m.build_rayjob_manifest(BENCHMARK, spec, 2, IMAGE)
    job = m.build_runner_job_manifest(BENCHMARK, spec, "dask", 2, IMAGE, "tcp://x:8786")
    for c in (rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0],
              job["spec"]["template"]["spec"]["containers"][0]):
        assert names.FAULT_PODS_ENV not in _env(c)
    dc = m.build_daskcluster_manifest(BENCHMARK, spec, 2, IMAGE)
    assert "--nanny" in dc["spec"]["worker"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("framework", ["ray", "dask-on-ray", "dask"])
def test_only_the_worker_containers_are_marked_as_one_workers(framework):
    """Each worker pod's container holds one worker, so its samplers read the container's memory
    cgroup (bench.measure.CgroupMemory); the head, the scheduler and the runner hold more (the
    GCS, the driver) or no worker, and are not marked."""
    spec = parse_spec(BENCHMARK)
    env = names.WORKER_CONTAINER_ENV
    runner = m.build_runner_job_manifest(BENCHMARK, spec, "dask", 2, IMAGE, "tcp://x:8786")
    assert env not in _env(runner["spec"]["template"]["spec"]["containers"][0])
    if framework == "dask":
        dc = m.build_daskcluster_manifest(BENCHMARK, spec, 2, IMAGE)["spec"]
        worker, other = (dc[role]["spec"]["containers"][0] for role in ("worker", "scheduler"))
    else:
        rcs = m.build_rayjob_manifest(BENCHMARK, spec, 2, IMAGE, framework)["spec"][
            "rayClusterSpec"]
        worker = rcs["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        other = rcs["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert _env(worker)[env] == "1" and env not in _env(other)
