"""The real ``kubectl`` against the API emulator served over HTTP on localhost: what a user of
the testbed types (apply with validation, get with the printer columns, -o wide, describe,
get -w, wait, delete) works as it does against a real cluster. The Benchmark's status is
patched through the status subresource by the test (no operator runs here).

kubectl runs as a subprocess (asyncio, so the emulator keeps serving on the test's loop), with
its own kubeconfig and discovery cache under ``tmp_path``. Streams are read line by line with
a timeout on each read, never after a sleep."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
import yaml

from support.k8s_emulator import BENCHMARK_CRD, KUBERAY_DIR, serve_emulator, write_kubeconfig

KUBECTL = shutil.which("kubectl")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits-knn.yaml"
NS = "ns1"
BENCHMARKS = f"/apis/testbed.dev/v1alpha1/namespaces/{NS}/benchmarks"
MERGE = {"Content-Type": "application/merge-patch+json"}
GUARD = 30  # seconds: a bound on each kubectl call and each line read, never a wait

pytestmark = [pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary on PATH"),
              pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")]


class Kubectl:
    def __init__(self, kubeconfig: Path, cache: Path):
        self.args = [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}"]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(cache.parent)}

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*self.args, *args, env=self.env,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)

    async def __call__(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        proc = await self.start(*args)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), GUARD)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if check and proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: "
                                 f"{err.decode()}")
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def kube(tmp_path):
    async with serve_emulator(NS) as env, aiohttp.ClientSession(env.url) as s:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", env.url, NS)
        yield env, s, Kubectl(kubeconfig, tmp_path / "cache")


async def _patch_status(s: aiohttp.ClientSession, status: dict) -> None:
    async with s.patch(f"{BENCHMARKS}/digits-knn/status", json={"status": status},
                       headers=MERGE) as r:
        assert r.status == 200, await r.text()


def _columns(priority: bool) -> list[str]:
    """The header kubectl prints: NAME, then the CRD's printer columns (priority > 0 only wide)."""
    version = yaml.safe_load(BENCHMARK_CRD.read_text())["spec"]["versions"][0]
    return ["NAME"] + [c["name"].upper() for c in version["additionalPrinterColumns"]
                       if priority or not c.get("priority")]


def _table(text: str) -> list[list[str]]:
    """kubectl's table output, split on runs of 2+ spaces (cells may hold single spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


async def test_kubectl_version_and_discovery(kube):
    _env, _s, kubectl = kube
    _, out, _ = await kubectl("version", "-o", "json")
    version = json.loads(out)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    _, out, _ = await kubectl("api-resources", "--api-group=testbed.dev", "-o", "name")
    assert out.split() == ["benchmarks.testbed.dev"]
    _, out, _ = await kubectl("api-versions")
    assert {"v1", "testbed.dev/v1alpha1", "ray.io/v1"} <= set(out.split())
    assert ("ray.io/v1alpha1" in out.split()) == KUBERAY_DIR.is_dir()  # the KubeRay CRDs serve both


async def test_kubectl_apply_validates_with_the_crd_schema(kube, tmp_path):
    """kubectl apply with validation on (the default, Strict) learns from /openapi/v3 that the
    server validates fields, so an unknown field is the apiserver's 400, word for word."""
    env, _s, kubectl = kube
    _, out, _ = await kubectl("apply", "-f", str(EXAMPLE))
    assert out.strip() == "benchmark.testbed.dev/digits-knn created"
    _, out, _ = await kubectl("apply", "-f", str(EXAMPLE))
    assert out.strip() == "benchmark.testbed.dev/digits-knn unchanged"
    requested = {r.url.path for r in env.emulator.history}
    assert {"/openapi/v3", "/openapi/v3/apis/testbed.dev/v1alpha1"} <= requested

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "typo"
    doc["spec"]["repeat"] = 3
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(doc))
    rc, _, err = await kubectl("apply", "-f", str(typo), check=False)
    assert rc == 1 and err.strip() == ('Error from server (BadRequest): error when creating '
                                       f'"{typo}": Benchmark in '
                                       'version "v1alpha1" cannot be handled as a Benchmark: '
                                       'strict decoding error: '
                                       'unknown field "spec.repeat"')
    _, out, err = await kubectl("apply", "-f", str(typo), "--validate=warn")
    assert out.strip() == "benchmark.testbed.dev/typo created"
    assert 'Warning: unknown field "spec.repeat"' in err

    del doc["spec"]["repeat"]
    doc["metadata"]["name"], doc["spec"]["workers"] = "zero", [0]
    typo.write_text(yaml.safe_dump(doc))
    rc, _, err = await kubectl("apply", "-f", str(typo), check=False)
    assert rc == 1 and 'The Benchmark "zero" is invalid' in err and "spec.workers[0]" in err


async def test_kubectl_get_describe_rayjobs_and_configmaps(kube):
    _env, s, kubectl = kube
    await kubectl("apply", "-f", str(EXAMPLE))
    await _patch_status(s,
                        {"phase": "Running", "workload": "knn", "frameworks": "ray,dask",
                         "progress": "2/6",
                            "currentTrial": "ray-2", "message": "running ray-2"})
    _, out, _ = await kubectl("get", "benchmarks")
    header, row = _table(out)
    assert header == _columns(priority=False)
    cells = dict(zip(header, row, strict=False))
    assert cells | {"NAME": "digits-knn", "PHASE": "Running", "WORKLOAD": "knn",
                    "FRAMEWORKS": "ray,dask", "PROGRESS": "2/6"} == cells
    assert re.fullmatch(r"\d+s", cells["AGE"])
    _, out, _ = await kubectl("get", "bm", "-o", "wide")
    header, row = _table(out)
    assert header == _columns(priority=True)
    wide = dict(zip(header, row, strict=False))
    assert wide.get("TRIAL", "ray-2") == "ray-2"
    assert wide.get("MESSAGE", "running ray-2") == "running ray-2"

    _, out, _ = await kubectl("describe", "benchmark", "digits-knn")
    for line in ("Name:         digits-knn", "Namespace:    ns1", "Kind:         Benchmark"):
        assert line in out
    assert re.search(r"Phase:\s+Running", out) and re.search(r"Frameworks:\s+ray\s+dask", out)

    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "digits-knn-ray-2"},
              "spec": {"entrypoint": "testbed runner"}}
    async with s.post(f"/apis/ray.io/v1/namespaces/{NS}/rayjobs", json=rayjob) as r:
        assert r.status == 201
    async with s.patch(f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/digits-knn-ray-2/status",
                       headers=MERGE,
                       json={"status": {"jobStatus": "RUNNING",
                                        "jobDeploymentStatus": "Running"}}) as r:
        assert r.status == 200
    _, out, _ = await kubectl("get", "rayjobs")  # the preferred version of ray.io is v1
    header, row = _table(out)
    assert row[0] == "digits-knn-ray-2"
    if KUBERAY_DIR.is_dir():  # the real KubeRay CRDs: their printer columns, and v1alpha1 too
        assert header[:3] == ["NAME", "JOB STATUS", "DEPLOYMENT STATUS"] and row[1:3] == ["RUNNING",
                                                                                          "Running"]
        _, out, _ = await kubectl("get", "rayjobs.v1alpha1.ray.io", "-o",
                                  "jsonpath={.items[*].apiVersion}")
        assert out == "ray.io/v1alpha1"  # one storage for every served version

    async with s.post(f"/api/v1/namespaces/{NS}/configmaps",
                      json={"metadata": {"name": "digits-knn-ray-2-result"}}) as r:
        assert r.status == 201
    _, out, _ = await kubectl("get", "configmaps")
    header, row = _table(out)
    # the default table
    assert header == ["NAME", "CREATED AT"] and row[0] == "digits-knn-ray-2-result"


async def _read_until(stream: asyncio.StreamReader, pattern: str) -> list[str]:
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), GUARD)).decode()
        if not line:
            raise AssertionError(f"kubectl ended before {pattern!r}: {lines}")
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines


async def test_kubectl_watch_wait_and_delete(kube):
    env, s, kubectl = kube
    await kubectl("apply", "-f", str(EXAMPLE))
    watch = await kubectl.start("get", "benchmarks", "--watch")
    try:
        first = await _read_until(watch.stdout, r"^digits-knn\s")
        assert _table(first[0]) == [_columns(priority=False)]
        await _patch_status(s, {"phase": "Running", "progress": "1/6"})
        update = await _read_until(watch.stdout, r"Running")
        assert re.match(r"digits-knn\s+Running\s+1/6", update[-1])
    finally:
        watch.kill()
        await watch.wait()

    waiting = await kubectl.start("wait", "--for=condition=Ready", "benchmark/digits-knn",
                                  f"--timeout={GUARD}s")
    await _patch_status(s, {"conditions": [{"type": "Ready", "status": "True", "reason": "Finished",
                                            "message": "done",
                                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    out, err = await asyncio.wait_for(waiting.communicate(), GUARD + 5)
    assert waiting.returncode == 0, err.decode()
    assert out.decode().strip() == "benchmark.testbed.dev/digits-knn condition met"

    _, bm, _ = await kubectl("get", "bm", "digits-knn", "-o", "json")
    owner = json.loads(bm)
    ref = {"apiVersion": owner["apiVersion"], "kind": "Benchmark", "name": "digits-knn",
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    async with s.post(f"/api/v1/namespaces/{NS}/configmaps",
                      json={"metadata": {"name": "digits-knn-result",
                                         "ownerReferences": [ref]}}) as r:
        assert r.status == 201
    _, out, _ = await kubectl("delete", "benchmark", "digits-knn")
    assert out.strip() == 'benchmark.testbed.dev "digits-knn" deleted'
    rc, _, err = await kubectl("get", "bm", "digits-knn", check=False)
    assert rc == 1
    assert err.strip() == \
        'Error from server (NotFound): benchmarks.testbed.dev "digits-knn" not found'
    await env.emulator.garbage_collected()
    rc, _, err = await kubectl("get", "configmap", "digits-knn-result", check=False)
    assert rc == 1 and "NotFound" in err  # the garbage collector took the owned ConfigMap
