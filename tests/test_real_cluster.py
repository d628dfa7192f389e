"""Tier 7: a real single-node Kubernetes cluster (scripts/cluster.sh) running the project's own
images as real pods, with the real KubeRay operator and the real dask-kubernetes controller.

What runs where:

* the cluster: ``scripts/cluster.sh build`` (cached after the first, ~13 min cold), ``up``
  (~10 s) and, always, ``down`` at the end (also when a test or the set-up fails);
* the images: the slim runner and the operator (tests/image_build.py, the session's build shared
  with tests/test_images.py), ``docker save``d and ``scripts/cluster.sh import``ed (there is no
  registry: every pod uses ``IfNotPresent`` with a non-``latest`` tag);
* the testbed operator: **a pod** of the chart's Deployment (rendered by helm-python-sdk with
  the Benchmark CRD, as tests/test_chart.py does), under the chart's ServiceAccount, Role and
  RoleBinding, watching the namespace ``bench``; the runner's ServiceAccount and Role there too;
* KubeRay v1.6.1: ``scripts/cluster.sh kuberay`` (CRDs, its ClusterRole, the operator as a
  process on the node with its own client certificate);
* the dask-kubernetes controller (the ``dask-kubernetes`` wheel's, the version the .venv
  pins): **a process on the node**, ``kopf run --standalone --all-namespaces -m
  dask_kubernetes.operator.controller`` as its image runs it, logged in as its own
  ServiceAccount (a token kubeconfig). The runner image does not ship dask-kubernetes, so it
  cannot run as a pod of that image. Its CRDs, ServiceAccount, ClusterRole and binding come from
  the wheel's own Helm chart (``operator/deployment/helm``), rendered by helm-python-sdk.

Then small Benchmarks (KNN on digits, 1 worker) must succeed on real pods, with results in the
status, the result ConfigMap written by the runner, and every child gone afterwards.

Skipped, with one printed line naming what is missing, only when not root, without Go >= 1.26,
or when the cluster must be built and the Go module proxy is unreachable.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from image_build import OPERATOR, RUNNER, TAG

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
CACHE = Path(os.environ.get("TESTBED_CLUSTER_CACHE",
                            Path.home() / ".cache" / "raydask-testbed" / "cluster"))
KUBECTL = CACHE / "bin" / "kubectl"
LOGS = CACHE / "state" / "logs"
NS = "bench"                      # where Benchmarks go (the chart's watchNamespaces)
SYSTEM_NS = "testbed-system"      # the chart's release namespace (the operator pod)
DASK_NS = "dask-operator"         # the dask-kubernetes controller's ServiceAccount
RELEASE = "tb"
OPERATOR_NAME = f"{RELEASE}-testbed"   # the chart's fullname: Deployment and ServiceAccount
DASK_CHART = "operator/deployment/helm/dask-kubernetes-operator"
# Two cores in all: a Dask scheduler, two workers and the runner, or the Ray head, a worker and
# KubeRay's submitter (500m), must fit next to the operator (100m), so every trial pod asks for
# 400m (KubeRay gives the head the same).
RESOURCES = {"cpu": "400m", "memory": "2Gi"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

TIMINGS: dict[str, float] = {}


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, also under -q and output capture."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)
    else:
        sys.stderr.write(line + "\n")


# ------------------------------------------------------------------------------- kubectl
class Kube:
    """kubectl of the cluster's own version, as the cluster's admin (or another kubeconfig)."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(KUBECTL), "--kubeconfig", self.kubeconfig, *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)[:300]} exited {p.returncode}:\n"
                                 f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        return p

    def json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, docs: list[dict[str, Any]], *extra: str) -> None:
        text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
        self.run("apply", "--server-side", "--force-conflicts", "--field-manager=test-real-cluster",
                 "-f", "-", *extra, input=text, timeout=120)

    def items(self, kinds: str, ns: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kinds, "-n", ns] + (["-l", selector] if selector else [])
        return self.json(*args).get("items", [])


class Watch:
    """``kubectl get KIND --watch -o json`` in the background: every version of every object
    seen, for assertions on objects that are gone by the time the test looks."""

    def __init__(self, kube: Kube, kind: str, ns: str, selector: str = ""):
        self.file = tempfile.NamedTemporaryFile(prefix=f"tb-watch-{kind}-", suffix=".json",
                                                delete=False)
        args = [str(KUBECTL), "--kubeconfig", kube.kubeconfig, "get", kind, "-n", ns, "--watch",
                "-o", "json", "--show-managed-fields"] + (["-l", selector] if selector else [])
        self.proc = subprocess.Popen(args, stdout=self.file, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def objects(self) -> list[dict[str, Any]]:
        text = Path(self.file.name).read_text()
        dec, i, out = json.JSONDecoder(), 0, []
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                return out
            try:
                obj, i = dec.raw_decode(text, i)
            except json.JSONDecodeError:
                return out  # a half-written last object
            out.extend(obj.get("items", [obj]) if obj.get("kind", "").endswith("List") else [obj])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.file.close()
        os.unlink(self.file.name)


# ------------------------------------------------------------------------------- fixtures
def _go_problem() -> str | None:
    go = shutil.which("go")
    if go is None:
        return "no `go` on PATH (Go >= 1.26 builds the cluster: scripts/cluster.sh build)"
    v = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", v)
    if not m or (int(m.group(1)), int(m.group(2))) < (1, 26):
        return f"Go {v or '?'} is too old: scripts/cluster.sh build needs Go >= 1.26"
    return None


def _proxy_problem() -> str | None:
    proxy = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True).stdout.strip()
    url = next((u for u in re.split(r"[,|]", proxy) if u.startswith("http")), None)
    if url is None:
        return f"no Go module proxy (GOPROXY={proxy!r})"
    try:
        urllib.request.urlopen(url.rstrip("/") + "/k8s.io/kubernetes/@v/list", timeout=20).close()
    except (urllib.error.URLError, OSError) as e:
        return f"the Go module proxy {url} is unreachable ({e})"
    return None


@pytest.fixture(scope="module")
def cluster_binaries(request) -> None:
    """Root, Go, and the cluster's binaries (``scripts/cluster.sh build``: 0.04 s when cached)."""
    problem = None
    if os.geteuid() != 0:
        problem = "not root (the real cluster needs root: bridge, iptables, mounts, cgroups)"
    problem = problem or _go_problem()
    if problem is None:
        t0 = time.monotonic()
        p = subprocess.run([str(CLUSTER_SH), "build"], capture_output=True, text=True, timeout=1800)
        TIMINGS["cluster build"] = time.monotonic() - t0
        if p.returncode != 0:
            problem = _proxy_problem()
            if problem is None:
                raise AssertionError(f"scripts/cluster.sh build failed:\n{p.stderr[-4000:]}")
    if problem is not None:
        _say(request.config, f"test_real_cluster.py: SKIPPED: {problem}")
        pytest.skip(problem)


def _down() -> str:
    p = subprocess.run([str(CLUSTER_SH), "down"], capture_output=True, text=True, timeout=300)
    return p.stderr[-2000:] if p.returncode else ""


@pytest.fixture(scope="module")
def kube(request, cluster_binaries, built_images) -> Kube:
    """The cluster up (after the images are built: nothing idles during the build); always
    taken down again."""
    TIMINGS["image build"] = built_images["build_seconds"]
    t0 = time.monotonic()
    p = subprocess.run([str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=300)
    TIMINGS["cluster up"] = time.monotonic() - t0
    if p.returncode != 0:
        problem = _down()
        raise AssertionError(f"scripts/cluster.sh up failed:\n{p.stderr[-4000:]}\n{problem}")
    try:
        yield Kube(p.stdout.strip().splitlines()[-1])
    finally:
        problem = _down()
        _say(request.config, "test_real_cluster.py timings: " +
             ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))
        assert not problem, f"scripts/cluster.sh down failed: {problem}"


def _import_images(tmp: Path) -> None:
    tar = tmp / "images.tar"
    t0 = time.monotonic()
    p = subprocess.run(["docker", "save", "-o", str(tar), RUNNER, OPERATOR], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    TIMINGS["docker save"] = time.monotonic() - t0
    t0 = time.monotonic()
    p = subprocess.run([str(CLUSTER_SH), "import", str(tar)], capture_output=True, text=True,
                       timeout=900)
    TIMINGS["image import"] = time.monotonic() - t0
    tar.unlink()
    assert p.returncode == 0, p.stderr


def _render(chart: str, values: dict[str, Any], release: str,
            namespace: str) -> tuple[list[dict], list[dict]]:
    """(CRDs, other objects) of a chart, rendered by Helm's own Go SDK."""
    import helm_python as helm

    with helm.Chart.load(chart) as c:
        out = c.render(values, name=release, namespace=namespace)
        crds = [yaml.safe_load(d["data"]) for d in c.crds]
    docs = [d for key, text in sorted(out.items()) if not key.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    return crds, docs


def _install_testbed(kube: Kube) -> None:
    """The Benchmark CRD and the chart's objects; the operator as the chart's Deployment."""
    values = {"image": {"repository": OPERATOR.split(":")[0], "tag": TAG,
                        "pullPolicy": "IfNotPresent"},
              "runnerImage": RUNNER, "watchNamespaces": [NS], "pollSeconds": 1}
    crds, docs = _render(str(ROOT / "charts" / "testbed"), values, RELEASE, SYSTEM_NS)
    kube.apply(crds)
    kube.run("wait", "--for=condition=Established", "--timeout=60s",
             *[f"crd/{c['metadata']['name']}" for c in crds])
    kube.apply(docs)


def _dask_controller_kubeconfig(kube: Kube, sa: str, path: Path) -> None:
    """A kubeconfig logging in as the controller's ServiceAccount (a bound token)."""
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    token = kube.run("create", "token", sa, "-n", DASK_NS, "--duration=4h").stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": server}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": sa}}],
        "current-context": "testbed"}))
    path.chmod(0o600)


BLOCK_OWNER_DELETION = ("cannot set blockOwnerDeletion if an ownerReference refers to a resource "
                        "you can't set finalizers on")


def dask_finalizers_rbac(sa: str) -> list[dict[str, Any]]:
    """What the dask-kubernetes chart's ClusterRole lacks on a cluster with the
    OwnerReferencesPermissionEnforcement admission plugin (scripts/cluster.sh enables it, as
    OpenShift does): ``update`` on the owners' ``finalizers``. The controller adopts everything
    it makes with ``kopf.adopt`` (kopf/_kits/hierarchies.py: ``blockOwnerDeletion: true``): the
    scheduler Deployment and Service (owner: the DaskCluster), the worker Deployments (owner:
    the DaskWorkerGroup). The plugin (plugin/pkg/admission/gc/gc_admission.go) lets only those
    who may update the owner's finalizers set that flag."""
    name = "dask-kubernetes-operator-finalizers"
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [{"apiGroups": ["kubernetes.dask.org"],
                    "resources": ["daskclusters/finalizers", "daskworkergroups/finalizers",
                                  "daskjobs/finalizers"],
                    "verbs": ["update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": DASK_NS}]},
    ]


def _owned_service_dry_run(kubeconfig: Path) -> subprocess.CompletedProcess:
    """As the controller: a Service owned by a DaskCluster, as kopf.adopt makes it (admission
    runs on a server-side dry run; nothing is stored)."""
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "probe-scheduler", "namespace": NS,
                        "ownerReferences": [{"apiVersion": "kubernetes.dask.org/v1",
                                             "kind": "DaskCluster", "name": "probe",
                                             "uid": "00000000-0000-0000-0000-000000000001",
                                             "controller": True, "blockOwnerDeletion": True}]},
           "spec": {"ports": [{"port": 8786}], "selector": {"app": "probe"}}}
    # The API server's admission RESTMapper learns of new CRDs only when it is reset (every 30 s,
    # kube-apiserver's server.go): until then the owner's kind is unknown to the plugin and any
    # blockOwnerDeletion reference to it is refused with "cannot find RESTMapping".
    deadline = time.monotonic() + 45
    while True:
        p = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), "create",
                            "--dry-run=server", "-f", "-"], input=json.dumps(svc),
                           capture_output=True, text=True, timeout=60)
        if "cannot find RESTMapping" not in p.stderr or time.monotonic() > deadline:
            return p
        time.sleep(2)


class DaskController:
    """The dask-kubernetes controller as its image runs it, as a process on the node."""

    def __init__(self, kubeconfig: Path, log: Path):
        self.log = log
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                 "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                 "-m", "dask_kubernetes.operator.controller"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"dask controller exited:\n{self.output()[-3000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"dask controller not live:\n{self.output()[-3000:]}"
                time.sleep(0.5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _install_dask_controller(kube: Kube, tmp: Path) -> DaskController:
    import dask_kubernetes

    chart = Path(dask_kubernetes.__file__).parent / DASK_CHART
    crds, docs = _render(str(chart), {}, "dask", DASK_NS)
    kube.apply(crds)
    kube.run("wait", "--for=condition=Established", "--timeout=60s",
             *[f"crd/{c['metadata']['name']}" for c in crds])
    keep = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    rbac = [d for d in docs if d["kind"] in keep]
    assert {d["kind"] for d in rbac} == keep, [d["kind"] for d in docs]
    for d in rbac:
        if d["kind"] == "ServiceAccount":
            d["metadata"]["namespace"] = DASK_NS
    kube.apply(rbac)
    (sa,) = [d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"]
    kubeconfig = tmp / "dask-controller.kubeconfig"
    _dask_controller_kubeconfig(kube, sa, kubeconfig)
    # The chart's ClusterRole alone: the API server refuses the controller's own objects.
    refused = _owned_service_dry_run(kubeconfig)
    assert refused.returncode != 0 and BLOCK_OWNER_DELETION in refused.stderr, refused.stderr
    kube.apply(dask_finalizers_rbac(sa))
    allowed = _owned_service_dry_run(kubeconfig)
    assert allowed.returncode == 0, allowed.stderr
    controller = DaskController(kubeconfig, tmp / "dask-controller.log")
    try:
        controller.wait_live()
    except BaseException:
        controller.stop()
        raise
    return controller


class Stack:
    def __init__(self, kube: Kube, dask: DaskController):
        self.kube, self.dask = kube, dask

    def operator_pod(self) -> dict[str, Any]:
        pods = [p for p in self.kube.items("pods", SYSTEM_NS, "app.kubernetes.io/name=testbed")
                if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return pods[0]

    def operator_log(self) -> str:
        return self.kube.run("logs", "-n", SYSTEM_NS, f"deploy/{OPERATOR_NAME}", "--tail=200",
                             check=False).stdout

    def kuberay_log(self) -> str:
        f = LOGS / "kuberay-operator.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def diagnostics(self) -> str:
        k = self.kube
        parts = [
            "--- pods\n" + k.run("get", "pods", "-A", "-o", "wide", check=False).stdout,
            "--- events\n" + k.run("get", "events", "-n", NS, "--sort-by=.lastTimestamp",
                                   check=False).stdout[-5000:],
            "--- operator log\n" + self.operator_log()[-5000:],
            "--- dask controller log\n" + self.dask.output()[-4000:],
            "--- KubeRay log\n" + self.kuberay_log()[-4000:],
        ]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(kube: Kube, tmp_path_factory) -> Stack:
    tmp = tmp_path_factory.mktemp("real-cluster")
    _import_images(tmp)
    t0 = time.monotonic()
    for ns in (SYSTEM_NS, NS, DASK_NS):
        kube.run("create", "namespace", ns)
    _install_testbed(kube)
    p = subprocess.run([str(CLUSTER_SH), "kuberay"], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    dask = _install_dask_controller(kube, tmp)
    try:
        kube.run("rollout", "status", "-n", SYSTEM_NS, f"deploy/{OPERATOR_NAME}", "--timeout=180s",
                 timeout=200)
        TIMINGS["install (testbed, KubeRay, dask-kubernetes)"] = time.monotonic() - t0
        yield Stack(kube, dask)
    finally:
        dask.stop()


# ------------------------------------------------------------------------------- helpers
# Log lines of the controllers that mean a Benchmark cannot finish: fail with them at once
# instead of waiting out the deadline.
FATAL = [
    ("dask controller", re.compile(r".*(Forbidden|forbidden|cannot set blockOwnerDeletion).*")),
    ("KubeRay", re.compile(r".*(no such host|dial tcp: lookup).*")),
]


def run_benchmark(stack: Stack, name: str, spec: dict[str, Any], timeout: float = 480,
                  on_poll: Callable[[dict[str, Any]], None] | None = None
                  ) -> tuple[dict[str, Any], float, Watch, Watch]:
    """Apply a Benchmark; wait for its end (``on_poll`` sees it at every poll until then).
    Returns it, the seconds to its end and the pod and result ConfigMap watches (stopped by the
    caller)."""
    kube = stack.kube
    selector = f"testbed.dev/benchmark={name}"
    pods = Watch(kube, "pods", NS, selector)
    configmaps = Watch(kube, "configmaps", NS, "testbed.dev/result=true")
    seen = {"dask controller": len(stack.dask.output()), "KubeRay": len(stack.kuberay_log())}
    t0 = time.monotonic()
    kube.apply([{"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
                 "metadata": {"name": name, "namespace": NS}, "spec": spec}])
    try:
        while True:
            bm = kube.json("get", "benchmark", name, "-n", NS)
            if (bm.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return bm, time.monotonic() - t0, pods, configmaps
            if on_poll is not None:
                on_poll(bm)
            logs = {"dask controller": stack.dask.output()[seen["dask controller"]:],
                    "KubeRay": stack.kuberay_log()[seen["KubeRay"]:]}
            for who, pattern in FATAL:
                hits = [m.group(0) for m in pattern.finditer(logs[who])]
                if hits:
                    raise AssertionError(f"{who} cannot go on:\n" + "\n".join(hits[:5]))
            assert time.monotonic() - t0 < timeout, f"Benchmark {name} did not finish in {timeout} s"
            time.sleep(2)
    except BaseException:
        print(json.dumps((kube.json("get", "benchmark", name, "-n", NS) or {}).get("status"),
                         indent=1)[-4000:])
        print(stack.diagnostics())
        pods.stop()
        configmaps.stop()
        # Out of the way of the next test (trials of all Benchmarks share one slot).
        kube.run("delete", "benchmark", name, "-n", NS, "--timeout=90s", timeout=120, check=False)
        raise


def knn_spec(framework: str, workers: tuple[int, ...] = (1,)) -> dict[str, Any]:
    return {"frameworks": [framework], "workers": list(workers), "workload": {"name": "knn"},
            "dataset": {"name": "digits"}, "repeats": 2, "warmup": 0,
            "workerResources": dict(RESOURCES), "startupTimeoutSeconds": 300,
            "timeoutSeconds": 300}


def assert_succeeded(bm: dict[str, Any], framework: str, workers: tuple[int, ...] = (1,)
                     ) -> list[dict[str, Any]]:
    status = bm["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[-4000:]
    trials = status["trials"]
    assert [(t["framework"], t["workers"], t["state"]) for t in trials] == \
        [(framework, w, "Succeeded") for w in workers]
    for trial in trials:
        assert trial["clusterStartupSeconds"] > 0, trial
        (res,) = trial["results"]
        assert res["state"] == "succeeded" and res["workload"] == "knn", res
        assert len(res["seconds"]) == 2 and all(s > 0 for s in res["seconds"]) and res["median"] > 0
        assert res["qualityMetric"] == "accuracy" and res["quality"] > 0.9, res
        assert res["cpu"] is not None and res["memory"] > 0, res  # sampled in the worker pods
    assert sorted((r["framework"], r["workers"]) for r in status["summary"]) == \
        [(framework, w) for w in sorted(workers)], status["summary"]
    return trials


def assert_result_configmap(configmaps: Watch, bm: dict[str, Any], trial: str) -> None:
    """The runner wrote ``<trial>-result`` with its records, owned by the Benchmark."""
    seen = [c for c in configmaps.objects() if c["metadata"]["name"] == f"{trial}-result"]
    assert seen, [c["metadata"]["name"] for c in configmaps.objects()]
    cm = seen[-1]
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Benchmark", bm["metadata"]["uid"])
    payload = json.loads(cm["data"]["records.json"])
    (rec,) = payload["records"]
    assert rec["state"] == "succeeded" and rec["quality"]["accuracy"] > 0.9
    managers = {m["manager"] for m in cm["metadata"].get("managedFields", [])}
    assert any(m.startswith("testbed-runner") for m in managers), managers


def assert_children_gone(stack: Stack, name: str, timeout: float = 150) -> float:
    """Every object of the Benchmark's trials is deleted (the operator deletes the RayJob or the
    DaskCluster and the runner Job; the garbage collector their dependents). Returns seconds."""
    t0 = time.monotonic()
    kinds = ("pods,jobs.batch,rayjobs.ray.io,rayclusters.ray.io,daskclusters.kubernetes.dask.org,"
             "daskworkergroups.kubernetes.dask.org,deployments.apps,services,configmaps")
    while True:
        left = [f"{o['kind']}/{o['metadata']['name']}" for o in stack.kube.items(kinds, NS)
                if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kube-root-ca.crt")]
        if not left:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"still there after {timeout} s: {left}"
        time.sleep(2)


def delete_benchmark(stack: Stack, name: str) -> None:
    """Deleting it returns once the operator has removed its finalizer."""
    stack.kube.run("delete", "benchmark", name, "-n", NS, "--timeout=60s", timeout=90)


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


# ------------------------------------------------------------------------------- tests
def test_operator_runs_as_a_pod_under_its_service_account(stack):
    pod = stack.operator_pod()
    assert pod["spec"]["serviceAccountName"] == OPERATOR_NAME
    (c,) = pod["spec"]["containers"]
    assert c["image"] == OPERATOR and c["imagePullPolicy"] == "IfNotPresent"
    assert pod_ready(pod), pod["status"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    sa = f"system:serviceaccount:{SYSTEM_NS}:{OPERATOR_NAME}"
    can = stack.kube.run("auth", "can-i", "create", "rayjobs.ray.io", "-n", NS, "--as", sa,
                         check=False).stdout.strip()
    assert can == "yes"
    cannot = stack.kube.run("auth", "can-i", "create", "pods", "-n", NS, "--as", sa,
                            check=False).stdout.strip()
    assert cannot == "no"


def test_dask_knn_one_and_two_workers(stack, record_property):
    name = "knn-dask"
    bm, seconds, pods, configmaps = run_benchmark(stack, name, knn_spec("dask", (1, 2)))
    try:
        TIMINGS["dask x1+x2 to Succeeded"] = seconds
        record_property("dask x1+x2 seconds to Succeeded", seconds)
        for trial in assert_succeeded(bm, "dask", (1, 2)):
            assert trial["clusterCreatedAt"]
            assert_result_configmap(configmaps, bm, trial["cluster"].split("/")[1])
        seen = pods.objects()
        roles = {p["metadata"]["labels"].get("dask.org/component") or "runner" for p in seen}
        assert roles == {"scheduler", "worker", "runner"}, roles
        workers = {p["metadata"]["name"] for p in seen
                   if p["metadata"]["labels"].get("dask.org/component") == "worker"}
        assert len(workers) == 3, workers  # one, then two
        scheduler = [p for p in seen if p["metadata"]["labels"].get("dask.org/component") == "scheduler"]
        assert any(pod_ready(p) for p in scheduler), "the scheduler's readiness probe never passed"
    finally:
        pods.stop()
        configmaps.stop()
    TIMINGS["dask cleanup"] = assert_children_gone(stack, name)
    delete_benchmark(stack, name)


def test_ray_knn_one_worker(stack, record_property):
    name = "knn-ray"
    bm, seconds, pods, configmaps = run_benchmark(stack, name, knn_spec("ray"))
    try:
        TIMINGS["ray x1 to Succeeded"] = seconds
        record_property("ray x1 seconds to Succeeded", seconds)
        (trial,) = assert_succeeded(bm, "ray")
        assert_result_configmap(configmaps, bm, trial["cluster"].split("/")[1])
        seen = pods.objects()
        heads = [p for p in seen if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        workers = [p for p in seen if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
        assert heads and workers, sorted({p["metadata"]["name"] for p in seen})
        # KubeRay's injected probes (rayVersion >= 2.53: HTTP GET /api/healthz on the dashboard
        # agent, port 52365) passed: the head and the worker became Ready.
        for group in (heads, workers):
            probe = group[-1]["spec"]["containers"][0]["readinessProbe"]
            assert probe["httpGet"]["path"] == "/api/healthz", probe
            assert probe["httpGet"]["port"] == 52365, probe
            assert any(pod_ready(p) for p in group), group[-1]["status"]
    finally:
        pods.stop()
        configmaps.stop()
    TIMINGS["ray x1 cleanup"] = assert_children_gone(stack, name)
    delete_benchmark(stack, name)


def test_dask_on_ray_knn_one_worker(stack):
    """Dask collections on Ray's scheduler: a RayJob like ``ray``'s, the runner as its driver."""
    name = "knn-dask-on-ray"
    bm, seconds, pods, configmaps = run_benchmark(stack, name, knn_spec("dask-on-ray"))
    pods.stop()
    try:
        TIMINGS["dask-on-ray x1 to Succeeded"] = seconds
        (trial,) = assert_succeeded(bm, "dask-on-ray")
        assert trial["cluster"].startswith("RayJob/")
        assert_result_configmap(configmaps, bm, trial["cluster"].split("/")[1])
    finally:
        configmaps.stop()
    assert_children_gone(stack, name)
    delete_benchmark(stack, name)


def test_a_trial_that_cannot_be_scheduled_says_why(stack):
    """One core per pod does not fit twice on this two-core node next to the operator: the
    scheduler leaves one Ray pod Pending. The trial fails at its start-up timeout with the
    scheduler's reason (the emulator has no scheduler, so only this tier can show it)."""
    name = "knn-too-big"
    spec = dict(knn_spec("ray"), workerResources={"cpu": "1", "memory": "2Gi"},
                startupTimeoutSeconds=30)
    bm, seconds, pods, configmaps = run_benchmark(stack, name, spec, timeout=180)
    pods.stop()
    configmaps.stop()
    TIMINGS["unschedulable ray x1 to Failed"] = seconds
    status = bm["status"]
    assert status["phase"] == "Failed", json.dumps(status, indent=1)[-3000:]
    (trial,) = status["trials"]
    print(f"unschedulable trial: {trial['error']}")
    assert "was not ready within startupTimeoutSeconds=30" in trial["error"], trial["error"]
    assert re.search(r"pod \S+ not scheduled \(Unschedulable: 0/1 nodes are available: "
                     r"1 Insufficient cpu", trial["error"]), trial["error"]
    assert_children_gone(stack, name)
    delete_benchmark(stack, name)


def test_the_operator_pod_killed_mid_trial(stack):
    """The operator's pod is deleted while a trial runs: its Deployment makes a new one, which
    reads the trial back from the status, adopts the trial's objects and finishes it, without
    starting anything twice."""
    name = "knn-restart"
    before = stack.operator_pod()["metadata"]["name"]
    killed: dict[str, Any] = {}

    def kill(bm: dict[str, Any]) -> None:
        trials = (bm.get("status") or {}).get("trials") or []
        if not killed and trials and trials[0].get("submittedAt"):
            stack.kube.run("delete", "pod", "-n", SYSTEM_NS, before, "--wait=false")
            killed["phase"] = bm["status"]["phase"]

    bm, seconds, pods, configmaps = run_benchmark(stack, name, knn_spec("dask"), on_poll=kill)
    try:
        TIMINGS["dask x1 with the operator killed, to Succeeded"] = seconds
        assert killed == {"phase": "Running"}, killed
        (trial,) = assert_succeeded(bm, "dask")
        assert trial["attempts"] == 1, trial
        runners = {p["metadata"]["name"] for p in pods.objects()
                   if "job-name" in p["metadata"]["labels"]}
        assert len(runners) == 1, runners
    finally:
        pods.stop()
        configmaps.stop()
    assert_children_gone(stack, name)
    delete_benchmark(stack, name)
    after = stack.operator_pod()
    assert after["metadata"]["name"] != before and pod_ready(after)


def test_the_operator_hit_no_permission_error(stack):
    """After both Benchmarks: the operator's log has no 403 (its Role lacks nothing)."""
    log = stack.operator_log()
    bad = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    assert not bad, "\n".join(bad[:10])
    assert stack.operator_pod()["status"]["containerStatuses"][0]["restartCount"] == 0
