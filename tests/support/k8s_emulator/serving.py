"""Loading the CRDs the tests serve, serving an emulator on a local port, kubeconfigs."""
from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import kmock
import yaml

from .emulator import PatchedEmulator

ROOT = Path(__file__).resolve().parents[3]
BENCHMARK_CRD = ROOT / "operator" / "crds" / "benchmark.yaml"
KUBERAY_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"  # read in place, never copied


# ------------------------------------------------------------------------------------- CRDs
def _load_yaml(path: Path) -> list[dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KubeRay CRDs are 1-1.4 MB
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


@functools.cache
def _crd_documents() -> tuple[tuple[dict, ...], bool]:
    """The CRDs to serve (parsed once per process), and whether the KubeRay ones were found."""
    crds = _load_yaml(BENCHMARK_CRD)
    kuberay = KUBERAY_DIR.is_dir() and any(KUBERAY_DIR.glob("*.yaml"))
    if kuberay:
        for path in sorted(KUBERAY_DIR.glob("*.yaml")):
            crds += _load_yaml(path)
    dask = dask_crd_dir()
    if dask is not None:
        for path in sorted(dask.glob("*.yaml")):
            crds += _load_yaml(path)
    return tuple(d for d in crds if d.get("kind") == "CustomResourceDefinition"), bool(kuberay)


def dask_crd_dir() -> Path | None:
    """The CRDs the installed ``dask-kubernetes`` wheel ships (found without importing it)."""
    spec = importlib.util.find_spec("dask_kubernetes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(next(iter(spec.submodule_search_locations))) / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds")
    return path if path.is_dir() else None


def load_crds(emulator: PatchedEmulator) -> list[str]:
    """Register the Benchmark CRD, the KubeRay v1.7.0 CRDs from ``../shared/schemas/kuberay``
    (or, if that folder is absent, schemaless ``ray.io/v1`` RayCluster/RayJob/RayService), and the
    dask-kubernetes CRDs. Returns the ``group/version/plural`` names registered."""
    crds, kuberay = _crd_documents()
    added = [r for crd in crds for r in emulator.add_crd(crd)]
    if not kuberay:
        added += [emulator.add_schemaless(f"ray.io/v1/{plural}", kind)
                  for plural, kind in (("rayclusters", "RayCluster"), ("rayjobs", "RayJob"),
                                       ("rayservices", "RayService"))]
    return [f"{r.group}/{r.version}/{r.plural}" for r in added]


# ------------------------------------------------------------------------------------ serving
@dataclass(frozen=True)
class EmulatorHandle:
    """What :func:`serve_emulator` yields."""
    emulator: PatchedEmulator
    server: kmock.Server
    url: str            # e.g. "http://127.0.0.1:40123" (no trailing slash)
    namespace: str


@contextlib.asynccontextmanager
async def serve_emulator(namespace: str = "ns1") -> AsyncIterator[EmulatorHandle]:
    """Serve a :class:`PatchedEmulator` on a random local port, on the running event loop, with
    the built-in kinds, the CRDs of :func:`load_crds` and the namespace ``namespace``."""
    async with PatchedEmulator() as k, kmock.Server(k) as srv:
        # v1 namespaces/configmaps/..., batch/v1 jobs, networking.k8s.io/v1 networkpolicies...
        k.resources.load_bundled()
        load_crds(k)
        async with srv.client.post("/api/v1/namespaces", json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}) as resp:
            resp.raise_for_status()
        yield EmulatorHandle(emulator=k, server=srv, url=str(srv.url).rstrip("/"),
                             namespace=namespace)


def write_kubeconfig(path: str | Path, url: str, namespace: str = "ns1",
                     token: str | None = None) -> Path:
    """Write a kubeconfig (context ``kmock``) pointing at the emulator; ``token`` (the user name,
    for :attr:`PatchedEmulator.authorizer`) or no credentials."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock", "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {"token": token} if token else {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock",
                                                   "namespace": namespace}}],
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
