"""The real dask-kubernetes controller against the API emulator, with a small kubelet stand-in.

:class:`RealDaskControllers` is :class:`fake_controllers.FakeControllers` (fake KubeRay, the
Job kubelet, admission, Events) with the *fake* Dask operator replaced by:

* **the real controller** of the ``dask-kubernetes`` wheel (a Kopf operator,
  ``dask_kubernetes/operator/controller/controller.py``), run as its own process the way its
  image runs it: ``kopf run --standalone --namespace NS -m dask_kubernetes.operator.controller``,
  with ``$KUBECONFIG`` pointing at the emulator (its client, kr8s, reads it and asks
  ``/version/``). It sets the DaskCluster's ``status.phase`` (``Created``, ``Pending``, and
  ``Running`` once the scheduler Service has a status, which the emulator gives a Service at
  creation), creates the scheduler Deployment and Service and a DaskWorkerGroup, and for that
  the worker Deployments, each owned by its DaskCluster or DaskWorkerGroup;
* **a Deployment controller + kubelet stand-in** (the emulator has no controllers): for each
  Deployment labelled ``dask.org/component`` scheduler or worker, one Pod (its template's labels,
  owned by the Deployment: the emulator's garbage collector removes it with it) and one local
  process running the template's first container ``command + args`` with its env, as the kubelet
  would (``$(VAR)`` expanded). Only what a pod network would give is rewritten: each process
  listens on ``127.0.0.1`` with free ports instead of the container ports, and the scheduler
  Service's DNS name (``<cluster>-scheduler.<ns>.svc[.cluster.local]``, in
  ``DASK_SCHEDULER_ADDRESS`` or the Job's args) becomes the Service's local address
  (:class:`fake_controllers.ServiceAddress`: refuses connections until the scheduler pod is
  Ready, then forwards to it, as kube-proxy with no ready endpoint would). A pod is Ready when
  its readiness probe passes (the scheduler's ``httpGet /health`` on its dashboard), or once
  its process runs if it has none; the Deployment's status then says ``readyReplicas: 1``.
  Deleting a Deployment kills the process group it stands for; deleting its pod stops it as
  the kubelet stops a container (SIGTERM, SIGKILL after the 2 s minimum grace period:
  fake_controllers.KUBELET_MIN_GRACE_SECONDS).

Knobs kept from the fake: ``late_scheduler`` (DaskCluster name -> seconds before its scheduler
pod is made), ``reject_pods``/``stuck_pods`` (by DaskCluster name, for the scheduler's pod).
``starts`` counts ``Deployment/<name>`` as well as the Jobs and RayJobs.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import aiohttp

from support import free_port
from support.fake_controllers import (
    DASKCLUSTERS,
    MERGE,
    PODS,
    FakeControllers,
    ServiceAddress,
    _now,
)

DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
SERVICES = "/api/v1/namespaces/{ns}/services"
DASKWORKERGROUPS = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskworkergroups"


class DaskKubernetesController:
    """``kopf run -m dask_kubernetes.operator.controller`` in its own process group."""

    def __init__(self, namespace: str, kubeconfig: str, log: str):
        self.ns, self.kubeconfig = namespace, kubeconfig
        self.proc: asyncio.subprocess.Process | None = None
        self.log = log

    async def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        with open(self.log, "wb") as out:  # the child keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", self.ns,
                "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
                "-m", "dask_kubernetes.operator.controller",
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=env)

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # Kopf stops on SIGTERM
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def _expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion (``$$(VAR)`` escapes; unknown names stay)."""
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m.group(1) == "$" else env.get(m.group(2), m.group(0)), text)


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """``flag value`` (or ``flag=value``) replaced, or appended when absent."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
        if a.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    return [*out, flag, value]


class RealDaskControllers(FakeControllers):
    """FakeControllers with the real dask-kubernetes controller and a Deployment kubelet."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._logs = tempfile.mkdtemp(prefix="tb-real-dask-")  # the controller's and pods' output
        self.controller = DaskKubernetesController(self.ns, self.kubeconfig,
                                                   os.path.join(self._logs, "controller.log"))
        self.pod_created_at: dict[str, float] = {}  # pod name -> when it was created (epoch)
        self._scheduler_local: dict[str, str] = {}   # DaskCluster name -> tcp://127.0.0.1:port

    def _watches(self) -> list[tuple[str, Any]]:
        return [(p, fn) for p, fn in super()._watches() if p != DASKCLUSTERS] + [
            (SERVICES, self._service), (DEPLOYMENTS, self._deployment)]

    async def __aenter__(self) -> RealDaskControllers:
        await super().__aenter__()
        await self.controller.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.controller.stop()  # first: nothing is re-created while we tear down
        try:
            await super().__aexit__(*exc)
        finally:
            shutil.rmtree(self._logs, ignore_errors=True)

    # -- kube-proxy + cluster DNS: the scheduler Service ------------------------------------
    def _dns_names(self, service: str) -> tuple[str, str]:
        return f"{service}.{self.ns}.svc", f"{service}.{self.ns}.svc.cluster.local"

    async def _service(self, key: str, obj: dict[str, Any]) -> None:
        labels = obj["metadata"].get("labels") or {}
        if labels.get("dask.org/component") != "scheduler":
            return
        service = self._services[key] = ServiceAddress()
        for dns in self._dns_names(obj["metadata"]["name"]):
            self._dask_addresses[dns] = f"tcp://127.0.0.1:{service.port}"
            self._scheduler_up.setdefault(dns, asyncio.Event())

    async def _job(self, key: str, obj: dict[str, Any]) -> None:
        # The Job's pod resolves the Service's name: wait until our watch has seen the Service
        # (the controller sets Running after creating it; our watch may be a moment behind).
        c = obj["spec"]["template"]["spec"]["containers"][0]
        hosts = [m.group(1) for a in [*(c.get("command") or []), *(c.get("args") or [])]
                 if (m := re.fullmatch(r"tcp://([^:/]+-scheduler\.[^:/]+):\d+", a))]
        deadline = time.monotonic() + 10
        while any(h not in self._dask_addresses for h in hosts) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await super()._job(key, obj)

    # -- Deployment controller + kubelet -----------------------------------------------------
    async def _deployment(self, key: str, obj: dict[str, Any]) -> None:
        """The Deployment's one pod, and a new one whenever that pod is deleted while the
        Deployment lives (the ReplicaSet controller keeps ``replicas``:
        pkg/controller/replicaset/replica_set.go, ``manageReplicas``), from the same template:
        a Dask worker comes back under the same ``DASK_WORKER_NAME``."""
        labels = (obj["spec"]["template"].get("metadata") or {}).get("labels") or {}
        if labels.get("dask.org/component") not in ("scheduler", "worker") or \
                not labels.get("dask.org/cluster-name"):
            return
        self.starts[key] += 1
        rs = f"{obj['metadata']['name']}-{secrets.token_hex(5)[:9]}"  # pod-template-hash name
        replacing: str | None = None
        while True:
            pod = await self._deployment_pod(key, obj, rs, replacing)
            if pod is None or pod not in self.killed_pods:
                return  # not made, or its process ended by itself
            # Deleted: the ReplicaSet makes a new one, unless the Deployment is going too (the
            # garbage collector deletes a Deployment's pods after it).
            current = await self._get(f"{DEPLOYMENTS}/{obj['metadata']['name']}")
            if current is None or current["metadata"].get("deletionTimestamp") or \
                    current["metadata"]["uid"] != obj["metadata"]["uid"]:
                return
            replacing = pod

    def _pod_argv(self, container: dict[str, Any], env: dict[str, str],
                  scheduler_of: str | None) -> tuple[list[str], int]:
        """The pod's command line on a pod's own network (loopback, free ports), and its
        dashboard port; ``scheduler_of``: the cluster whose scheduler the pod is."""
        argv = [_expand(a, env) for a in [*(container.get("command") or []),
                                          *(container.get("args") or [])]]
        argv = _set_flag(argv, "--host", "127.0.0.1")
        dashboard = free_port()
        argv = _set_flag(argv, "--dashboard-address", f"127.0.0.1:{dashboard}")
        if scheduler_of is not None:
            port = free_port()
            argv = _set_flag(argv, "--port", str(port))
            self._scheduler_local[scheduler_of] = f"tcp://127.0.0.1:{port}"
        return argv, dashboard

    async def _resolve_service_names(self, env: dict[str, str]) -> None:
        """Cluster DNS: the scheduler Service's name, wherever the pod carries it."""
        for k, v in list(env.items()):
            m = re.fullmatch(r"tcp://([^:/]+):\d+", v)
            if m and m.group(1).endswith((".svc", ".svc.cluster.local")):
                while m.group(1) not in self._dask_addresses:  # the Service comes right after
                    await asyncio.sleep(0.05)
                env[k] = self._dask_addresses[m.group(1)]

    async def _deployment_pod(self, key: str, obj: dict[str, Any], rs: str,
                              replacing: str | None) -> str | None:
        """One pod of the Deployment and the process it stands for, until that ends; returns
        the pod's name (None when it could not be made)."""
        meta, template = obj["metadata"], obj["spec"]["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        component, cluster = labels.get("dask.org/component"), labels.get("dask.org/cluster-name")
        name = meta["name"]
        pod = f"{rs}-{secrets.token_hex(3)[:5]}"
        scheduler = component == "scheduler"
        if scheduler and cluster in self.late_scheduler and replacing is None:  # a slow pull
            await asyncio.sleep(self.late_scheduler[cluster])
        if scheduler:
            await self._admitted(cluster, template["spec"], f"{rs}-",
                                 ("apps/v1", "ReplicaSet", rs, "FailedCreate",
                                  "replicaset-controller"))
            if await self._stuck(cluster, pod, labels):
                return None
        container = template["spec"]["containers"][0]
        env = await self._resolve_env(container.get("env") or [])
        argv, dashboard = self._pod_argv(container, env, cluster if scheduler else None)
        await self._resolve_service_names(env)
        pods = PODS.format(ns=self.ns)
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": self.ns, "labels": labels,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": name, "uid": meta["uid"],
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": template["spec"]}
        async with self._session.post(pods, data=json.dumps(body),
                                      headers={"Content-Type": "application/json"}) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
        self.pod_created_at[pod] = time.time()
        if replacing is not None:
            self.replaced_pods[replacing] = (pod, time.time())
        self.pod_specs[pod] = container
        log = os.path.join(self._logs, f"{pod}.log")
        with open(log, "wb") as out:  # the child keeps its own descriptor
            proc = await asyncio.create_subprocess_exec(
                *argv, env=self._process_env(env), start_new_session=True,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        self._procs[key] = proc
        self._pod_pids[pod] = (key, proc.pid)
        await self._patch_pod(pod, {"phase": "Running", "startTime": _now(), "podIP": "127.0.0.1",
                                    **self._readiness_status(False)})
        probe = container.get("readinessProbe")
        if probe is not None and "httpGet" in probe:
            url = f"http://127.0.0.1:{dashboard}{probe['httpGet'].get('path', '/')}"
            while proc.returncode is None and not await self._http_ok(url):
                await asyncio.sleep(0.2)
        if proc.returncode is not None:
            await self._patch_pod(pod, {"phase": "Failed"})
            with open(log, errors="replace") as f:
                sys.stderr.write(f"[{key} exited {proc.returncode}]\n{f.read()[-3000:]}\n")
            return pod
        self.pod_ready[pod] = True
        await self._patch_pod(pod, self._readiness_status(True))
        await self._patch_status(DEPLOYMENTS, name, {
            "observedGeneration": meta.get("generation", 1), "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1})
        if scheduler:  # the Service now has a ready endpoint
            service = self._services.get(f"Service/{name}")
            if service is not None:
                host, _, p = self._scheduler_local[cluster].removeprefix("tcp://").rpartition(":")
                await service.serve(host, int(p))
            self.scheduler_up_at[f"DaskCluster/{cluster}"] = time.time()
            for dns in self._dns_names(name):
                self._scheduler_up.setdefault(dns, asyncio.Event()).set()
        await proc.wait()
        return pod

    async def _patch_pod(self, pod: str, status: dict[str, Any]) -> None:
        async with self._session.patch(f"{PODS.format(ns=self.ns)}/{pod}/status", headers=MERGE,
                                       data=json.dumps({"status": status})) as r:
            if r.status != 404:
                r.raise_for_status()

    @staticmethod
    async def _http_ok(url: str) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession() as s, s.get(url, timeout=timeout) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
