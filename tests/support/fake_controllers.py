"""The controllers a real cluster would run, played against the API emulator over HTTP.

* **KubeRay** (RayJob): sets ``jobDeploymentStatus: Initializing``, starts a real local Ray
  cluster with the RayJob's worker count, gives each pod KubeRay's probes
  (:func:`kuberay_probes`, common/pod.go ``initLivenessAndReadinessProbe``), waits until the
  kubelet finds every pod Ready (raycluster_controller.go ``calculateStatus``: ``ready`` once
  all pods run and are Ready), sets ``Running``/``RUNNING`` with ``rayClusterName``
  and ``dashboardURL``, runs ``spec.entrypoint`` as the driver against it (``RAY_ADDRESS`` is
  the head, like a driver on the head pod, with the runtime env's and the head container's
  environment), then sets ``jobStatus`` ``SUCCEEDED``/``FAILED`` and
  ``jobDeploymentStatus`` ``Complete``/``Failed``.
* **Dask operator** (DaskCluster): sets ``status.phase`` ``Created``, ``Pending``, then
  ``Running`` at once, as dask-kubernetes does when the scheduler Service has a status
  (controller.py ``handle_scheduler_service_status``): before any pod. The Service's address
  (:class:`ServiceAddress`) refuses connections until the real local scheduler and N workers
  are up (``late_scheduler``: name -> seconds before its pod comes), then forwards to it. The
  runner waits for it itself, as it must on a real cluster. ``tests/support/real_dask_operator.py``
  swaps it for the real dask-kubernetes controller plus a Deployment kubelet stand-in
  (``RealDaskControllers``, used by ``tests/operator/test_operator_real_dask.py``).
* **kubelet readiness probes**: for every Ray pod, the readiness probe KubeRay gave it runs
  against the local node the pod stands for (:meth:`FakeControllers.probe`: ``httpGet`` on
  the node's dashboard agent port; ``exec`` with ``localhost:<port>`` pointed at the node and
  a PATH of ``image_tools`` only, no ``wget``, as in the image). Not Ready until it passes;
  failures are ``Unhealthy`` Events on the pod. Every ``probe_period`` s, no initial delay;
  liveness probes are not run.
* **kubelet + cluster DNS** (batch/v1 Job): runs ``command + args`` of the pod template's
  first container with its environment.  Only the Dask scheduler Service's DNS name
  (``<cluster>-scheduler.<ns>.svc:8786``) is rewritten to the local scheduler's address.  Sets
  ``startTime``/``active``, then ``succeeded`` with a ``Complete`` condition or ``failed``
  with ``Failed``/``BackoffLimitExceeded``.

The runner processes talk to the emulator through ``$KUBECONFIG`` (standing in for the pod's
service account) to publish their results.

``fast=True`` replaces clusters and runner with the *fast fake runner*: the objects become
ready at once and a plausible result ConfigMap is published directly (for the operator
benchmark with many Benchmarks). Still never more lenient: a RayJob whose probes are exec
probes never becomes ready (:meth:`FakeControllers._fast_ready`), and a Dask runner waits until
its scheduler would be up.  Knobs for fault tests: ``never_ready`` (cluster names that
never become ready), ``crash`` (names whose runner exits 1 without publishing anything),
``gate`` (an event every runner waits for before it starts).

* **Pods**: with real clusters, every Ray node and every Dask worker and scheduler also gets a
  Pod object carrying its template's labels plus KubeRay's ``ray.io/node-type`` or the Dask
  operator's ``dask.org/component``, ``status.podIP`` (the Ray node's address) and the
  ``DASK_WORKER_NAME`` env.  Deleting such a pod stops the process tree it stands for as the
  kubelet stops a container: SIGTERM, then SIGKILL after the grace period, which is never
  under 2 s, even for a deletion with ``gracePeriodSeconds: 0``
  (``minimumGracePeriodInSeconds``, pkg/kubelet/kuberuntime/kuberuntime_manager.go, applied in
  ``killContainer``, kuberuntime_container.go). ``killed_pods`` lists them.

* **KubeRay token auth** (``rayClusterSpec.authOptions``, KubeRay v1.6/v1.7 source):
  ``ValidateRayJobSpec`` (utils/validation.go) refuses ``mode: token`` without a ``rayVersion``
  of at least 2.52.0, and ``enableK8sTokenAuth`` on a RayJob: the RayJob gets
  ``jobDeploymentStatus: ValidationFailed``. Otherwise ``reconcileAuthSecret``
  (raycluster_controller.go) creates the Secret ``<raycluster>`` with a random ``auth_token``
  and ``SetContainerTokenAuthEnvVars`` (common/pod.go) gives the Ray containers
  ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from that Secret, unless a container sets them
  itself. Here the env is resolved like the kubelet does (``secretKeyRef`` read from the API),
  the local Ray processes and the driver get it, and the Secret goes with the cluster (its
  owner, the RayCluster, is garbage-collected with the RayJob).
* **Admission** (what the API server would refuse a controller's pod for): a pod naming a
  ServiceAccount that does not exist (plugin/pkg/admission/serviceaccount/admission.go), or a
  name in ``reject_pods`` (e.g. a quota refusal). The refused controller records it as real
  ones do: the Job controller's ``FailedCreate`` event ("Error creating: ...",
  pkg/controller/controller_utils.go), KubeRay's ``FailedToCreateHeadPod`` on the RayCluster,
  the ReplicaSet controller's ``FailedCreate`` for a Dask scheduler; nothing runs until it is
  admitted. ``runner_account`` (default true) creates the runner's ServiceAccount first, as the
  chart does. ``stuck_pods`` (name -> (reason, message)) gives the object's first pod a
  container waiting for that reason (e.g. ``ImagePullBackOff``), and nothing runs.

Every start is counted in ``starts`` (``Kind/name`` → count): tests assert nothing ran twice.
Deleted objects have their processes stopped; only processes started here are touched.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import json
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RAYJOBS = "/apis/ray.io/v1/namespaces/{ns}/rayjobs"
DASKCLUSTERS = "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
PODS = "/api/v1/namespaces/{ns}/pods"
SERVICEACCOUNTS = "/api/v1/namespaces/{ns}/serviceaccounts"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
EVENTS = "/api/v1/namespaces/{ns}/events"
MERGE = {"Content-Type": "application/merge-patch+json"}
RUNNER_ACCOUNT = "testbed-runner"  # bench.kube.names.RUNNER_ACCOUNT, made by the chart


def _version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


def kuberay_validate_auth(cluster_spec: dict[str, Any]) -> str | None:
    """KubeRay's checks of ``authOptions`` on a RayJob's cluster (utils/validation.go
    ``ValidateRayClusterSpec`` and ``ValidateRayJobSpec``), with its messages."""
    auth = cluster_spec.get("authOptions") or {}
    k8s_token = bool(auth.get("enableK8sTokenAuth"))
    if k8s_token:
        return "K8s token auth mode is currently not supported for RayJob"
    if auth.get("mode") != "token":
        return None
    raw = cluster_spec.get("rayVersion") or ""
    if not raw:
        return ("authOptions.mode is 'token' but RayVersion was not specified. Ray version "
                "2.52.0 or later is required")
    version = _version(raw)
    if version is None:
        return f"authOptions.mode is 'token' but RayVersion format is invalid: {raw}"
    if version < (2, 52, 0):
        return f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {raw}"
    return None


def kuberay_token_env(env: list[dict[str, Any]], cluster: str,
                      auth: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A Ray container's env as KubeRay leaves it (common/pod.go
    ``SetContainerTokenAuthEnvVars``): with ``mode: token``, ``RAY_AUTH_MODE=token`` and
    ``RAY_AUTH_TOKEN`` from the Secret ``<cluster>`` (or ``authOptions.secretName``), key
    ``auth_token``, each unless the container sets it already."""
    out = [dict(e) for e in env]
    if (auth or {}).get("mode") != "token":
        return out
    names = {e["name"] for e in out}
    if "RAY_AUTH_MODE" not in names:
        out.append({"name": "RAY_AUTH_MODE", "value": "token"})
    if "RAY_AUTH_TOKEN" not in names:
        out.append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": auth.get("secretName") or cluster, "key": "auth_token"}}})
    return out


# KubeRay v1.6/v1.7 ray-operator/controllers/ray/utils/constant.go
KUBERAY_AGENT_PORT = 52365          # DefaultDashboardAgentListenPort
KUBERAY_DASHBOARD_PORT = 8265       # DefaultDashboardPort
# BaseWgetHealthCommand
KUBERAY_WGET = "wget --tries 1 -T %d -q -O- http://localhost:%d/%s | grep success"
KUBERAY_PROBE = {  # Default{Readiness,Liveness}Probe* (Head*TimeoutSeconds for the head)
    "readinessProbe": {"initialDelaySeconds": 10, "timeoutSeconds": 2, "headTimeout": 5,
                       "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 10},
    "livenessProbe": {"initialDelaySeconds": 30, "timeoutSeconds": 2, "headTimeout": 5,
                      "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 120},
}


def kuberay_probes(container: dict[str, Any], node_type: str, ray_start_params: dict[str, str],
                   ray_version: str | None) -> dict[str, Any]:
    """The Ray container as KubeRay builds it, probes included: KubeRay v1.6/v1.7
    ray-operator/controllers/ray/common/pod.go ``initLivenessAndReadinessProbe`` (called from
    ``BuildPod``; ``supportsUnifiedHealthCheck``: ``rayVersion`` parsed by
    ``version.ParseGeneric`` and at least 2.53.0). With it, both probes are ``httpGet
    /api/healthz`` on the dashboard agent's listen port (``rayStartParams
    dashboard-agent-listen-port``, else 52365); without it (or unparsable), ``exec bash -c`` of
    ``wget ... /api/local_raylet_healthz | grep success`` (the head adds ``&&`` the same on
    the dashboard port's ``api/gcs_healthz``, timed out with DefaultReadinessProbeFailureThreshold,
    as upstream does). A probe the container sets itself is kept."""
    def port(key: str, default: int) -> int:
        try:
            return int(ray_start_params.get(key, default))
        except (TypeError, ValueError):
            return default

    version = _version(ray_version or "")
    # ParseGeneric needs at least major.minor; _version reads the same leading numbers.
    http = version is not None and version >= (2, 53, 0)
    agent = port("dashboard-agent-listen-port", KUBERAY_AGENT_PORT)
    commands = [KUBERAY_WGET % (KUBERAY_PROBE["readinessProbe"]["timeoutSeconds"], agent,
                                "api/local_raylet_healthz")]
    if node_type == "head":
        commands.append(KUBERAY_WGET % (KUBERAY_PROBE["readinessProbe"]["failureThreshold"],
                                        port("dashboard-port", KUBERAY_DASHBOARD_PORT),
                                        "api/gcs_healthz"))
    out = copy.deepcopy(container)
    for field, d in KUBERAY_PROBE.items():
        if out.get(field) is not None:
            continue
        probe = {"initialDelaySeconds": d["initialDelaySeconds"],
                 "timeoutSeconds": d["headTimeout"] if node_type == "head" else d["timeoutSeconds"],
                 "periodSeconds": d["periodSeconds"], "successThreshold": d["successThreshold"],
                 "failureThreshold": d["failureThreshold"]}
        if http:
            probe["httpGet"] = {"path": "/api/healthz", "port": agent}
        else:
            probe["exec"] = {"command": ["bash", "-c", " && ".join(commands)]}
        out[field] = probe
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")



# The kubelet's floor on a container's grace period (pkg/kubelet/kuberuntime/
# kuberuntime_manager.go): a pod deleted with gracePeriodSeconds 0 still gets SIGTERM and 2 s.
KUBELET_MIN_GRACE_SECONDS = 2.0

class ServiceAddress:
    """A Service's address as kube-proxy makes it work: fixed from the Service's creation;
    connections are refused while it has no ready endpoint (a bound, not listening socket),
    then forwarded to the endpoint (the local scheduler)."""

    def __init__(self) -> None:
        self._reserved = socket.socket()
        self._reserved.bind(("127.0.0.1", 0))
        self.port = self._reserved.getsockname()[1]
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task] = set()

    async def serve(self, host: str, port: int) -> None:
        self._reserved.close()
        self._server = await asyncio.start_server(
            lambda r, w: self._forward(r, w, host, port), "127.0.0.1", self.port,
            reuse_address=True)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       host: str, port: int) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [asyncio.ensure_future(pipe(reader, up_w)),
                 asyncio.ensure_future(pipe(up_r, writer))]
        self._pipes.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pipes.difference_update(tasks)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._reserved.close()
        if self._server is not None:
            self._server.close()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


class LocalCluster:
    """tests/support/local_cluster.py in its own process group: started and stopped by us only."""

    def __init__(self, framework: str, workers: int):
        self.framework, self.workers = framework, workers
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def start(self, timeout: float = 150,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
        """``env``: what the cluster's pods get on top of the image's (e.g. KubeRay's
        ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``)."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(HERE, "local_cluster.py"), self.framework,
            str(self.workers), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True, env={**os.environ, **(env or {})})
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"local {self.framework} cluster exited with "
                               f"{await self.proc.wait()}")
        self.info = json.loads(line)
        return self.info

    async def add_worker(self, name: str = "") -> dict[str, Any]:
        """One more worker (``name``: a Dask worker's; Ray names a node by its address): what
        a controller's replacement pod stands for. Returns it as ``info["workers"]`` lists
        them (with ``node`` for Ray)."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.stdin.write(f"add {name}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"local {self.framework} cluster exited with "
                               f"{await self.proc.wait()}")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def fake_records(argv: list[str]) -> dict[str, Any]:
    """What the fast fake runner publishes: one succeeded record per workload, timings that
    scale with the worker count (shape of bench.runner's records)."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    spec = json.loads(args.get("--spec-json", "{}"))
    framework, workers = args.get("--framework", "ray"), int(args.get("--workers", "1"))
    names = [w["name"] for w in spec.get("workloads") or [spec.get("workload") or {"name": "knn"}]]
    out = []
    for name in names:
        base = 1.0 if framework == "ray" else 1.1
        secs = [round(base / workers * (1 + 0.01 * k), 4) for k in range(spec.get("repeats", 3))]
        out.append({"workload": name, "framework": framework, "workers": workers,
                    "state": "succeeded", "error": None, "seconds": secs,
                    "phases": {"startup": 0.1, "load": 0.01, "distribute": 0.02},
                    "quality_metric": "accuracy", "quality": {"accuracy": 0.97},
                    "resources": {"cpu_mean": 50.0, "rss_peak": 2**27},
                    "environment": {"engine": {"startup_seconds": 0.1, "ready_at": time.time()}}})
    return {"run_id": "fake", "records": out}


class FakeControllers:
    def __init__(self, url: str, namespace: str, kubeconfig: str, *, fast: bool = False,
                 never_ready: set[str] | None = None,
                 crash: set[str] | dict[str, int] | None = None,
                 gate: asyncio.Event | None = None, runner_account: bool = True,
                 reject_pods: dict[str, str] | None = None,
                 stuck_pods: dict[str, tuple[str, str]] | None = None,
                 image_tools: tuple[str, ...] = ("bash", "sh", "grep"), probe_period: float = 0.5,
                 late_scheduler: dict[str, float] | None = None):
        self.url, self.ns, self.kubeconfig, self.fast = url.rstrip("/"), namespace, kubeconfig, fast
        self.never_ready = never_ready or set()
        self.runner_account = runner_account
        self.reject_pods = dict(reject_pods or {})   # object name -> admission refusal
        self.stuck_pods = dict(stuck_pods or {})     # object name -> (waiting reason, message)
        self.auth_env: dict[str, dict[str, str]] = {}  # RayJob key -> the RAY_AUTH_* its pods got
        self._secrets: dict[str, str] = {}             # RayJob key -> its auth Secret
        # name -> how many runs crash (a set: every run).
        self.crash = (dict.fromkeys(crash, -1) if isinstance(crash, (set, list))
                      else dict(crash or {}))
        self.gate = gate
        self.starts: collections.Counter[str] = collections.Counter()
        self.exits: dict[str, int] = {}
        # Kind/name -> when its end was reported (monotonic)
        self.finished_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task] = []
        self._work: dict[str, asyncio.Task] = {}
        self._clusters: dict[str, LocalCluster] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._dask_addresses: dict[str, str] = {}
        self._pod_pids: dict[str, tuple[str, int]] = {}  # pod name -> (cluster key, pid)
        self.killed_pods: list[str] = []
        # A worker pod's labels, framework and containers, to make it again once deleted;
        # deleted pod -> (its replacement, when that was created (epoch)).
        self._pod_template: dict[str, tuple[dict[str, str], str, Any]] = {}
        self.replaced_pods: dict[str, tuple[str, float]] = {}
        self._replacing: list[asyncio.Task] = []
        self.not_replaced: dict[str, str] = {}  # deleted worker pod -> why no new one was made
        # The kubelet's readiness probes: the tools an exec probe finds on the image's PATH
        # (the runner image has no wget), how often probes run, each pod's readiness.
        self.image_tools, self.probe_period = tuple(image_tools), probe_period
        self._probe_path: str | None = None
        self.pod_ready: dict[str, bool] = {}
        self.pod_specs: dict[str, dict[str, Any]] = {}  # pod name -> its container, as built
        self._probers: dict[str, list[asyncio.Task]] = collections.defaultdict(list)
        # DaskCluster name -> seconds until its pod
        self.late_scheduler = dict(late_scheduler or {})
        self._services: dict[str, ServiceAddress] = {}    # DaskCluster key -> its scheduler Service
        self.scheduler_up_at: dict[str, float] = {}  # DaskCluster key -> when it served (epoch)
        self._scheduler_up: dict[str, asyncio.Event] = {}  # scheduler DNS name -> it serves
        self.job_started_at: dict[str, float] = {}   # Job key -> when its runner started (epoch)
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> FakeControllers:
        self._session = aiohttp.ClientSession(self.url)
        if self.runner_account:  # what the chart installs in each runner namespace
            await self._create(SERVICEACCOUNTS, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": RUNNER_ACCOUNT, "namespace": self.ns}})
        for path, fn in self._watches():
            self._tasks.append(asyncio.create_task(self._watch(path.format(ns=self.ns), fn)))
        return self

    def _watches(self) -> list[tuple[str, Any]]:
        """What is watched, and the handler of each new object (None: Pods, for deletions).
        ``tests/support/real_dask_operator.py`` swaps the fake Dask operator for the real one
        here."""
        return [(RAYJOBS, self._rayjob), (DASKCLUSTERS, self._daskcluster), (JOBS, self._job),
                (PODS, None)]

    async def __aexit__(self, *exc: Any) -> None:
        for t in [*self._tasks, *self._work.values(), *self._replacing,
                  *(p for ps in self._probers.values() for p in ps)]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._work.values(), *self._replacing,
                             *(p for ps in self._probers.values() for p in ps),
                             return_exceptions=True)
        if self._probe_path is not None:
            import shutil

            shutil.rmtree(self._probe_path, ignore_errors=True)
        for key in list(self._procs):
            await self._kill(key)
        await asyncio.gather(*(c.stop() for c in self._clusters.values()),
                             *(s.close() for s in self._services.values()), return_exceptions=True)
        await self._session.close()

    async def _watch(self, path: str, handler: Any) -> None:
        """List, then watch from the list's resourceVersion, resuming from the last one seen,
        as client-go's reflector does. An ERROR event (a Status: 410 Expired when the
        resourceVersion is older than the apiserver keeps) ends the stream and re-lists."""
        rv: str | None = None
        seen: dict[str, dict[str, Any]] = {}  # name -> last object, to notice deletions missed
        while True:
            try:
                if rv is None:
                    rv = await self._relist(path, handler, seen)
                params = {"watch": "true", "timeoutSeconds": "30", "resourceVersion": rv}
                async with self._session.get(path, params=params,
                                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                    r.raise_for_status()
                    async for line in r.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            if obj.get("code") != 410:
                                print(f"fake controller watch {path}: {obj.get('message')}",
                                      file=sys.stderr)
                            rv = None
                            break
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if event["type"] == "BOOKMARK":
                            continue
                        if event["type"] == "DELETED":
                            seen.pop(obj["metadata"]["name"], None)
                        else:
                            seen[obj["metadata"]["name"]] = obj
                        await self._dispatch(event["type"], obj, handler)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.1)

    async def _relist(self, path: str, handler: Any, seen: dict[str, dict[str, Any]]) -> str:
        """A fresh list: objects not seen before are ADDED, those gone meanwhile DELETED (their
        deletion events were missed, like client-go's DeletedFinalStateUnknown)."""
        async with self._session.get(path) as r:
            r.raise_for_status()
            body = await r.json()
        current = {o["metadata"]["name"]: o for o in body.get("items") or []}
        for name in [n for n in seen if n not in current]:
            await self._dispatch("DELETED", seen.pop(name), handler)
        for name, obj in current.items():
            known = name in seen
            seen[name] = obj
            await self._dispatch("MODIFIED" if known else "ADDED", obj, handler)
        return body["metadata"]["resourceVersion"]

    async def _dispatch(self, etype: str, obj: dict[str, Any], handler: Any) -> None:
        if handler is None:  # a Pod
            if etype == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                self._pod_deleted(obj["metadata"]["name"])
            return
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        if etype == "ADDED" and key not in self._work:
            self._work[key] = asyncio.create_task(self._guard(key, handler(key, obj)))
        elif etype == "DELETED" or (etype == "MODIFIED"
                                    and obj["metadata"].get("deletionTimestamp")):
            task = self._work.pop(key, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await self._kill(key)
            await self._stop_cluster(key)

    async def _stop_cluster(self, key: str) -> None:
        service = self._services.pop(key, None)
        if service is not None:
            await service.close()
        probers = self._probers.pop(key, [])
        for t in probers:
            t.cancel()
        await asyncio.gather(*probers, return_exceptions=True)
        secret = self._secrets.pop(key, None)
        if secret is not None:  # garbage-collected with its owner, the RayCluster
            async with self._session.delete(f"{SECRETS.format(ns=self.ns)}/{secret}"):
                pass
        cluster = self._clusters.pop(key, None)
        # Its pods stand for nothing any more (and their pids may be reused): forget them.
        for pod in [p for p, (k, _) in self._pod_pids.items() if k == key]:
            del self._pod_pids[pod]
        if cluster is not None:
            await cluster.stop()

    def _pod_deleted(self, name: str) -> None:
        import psutil

        entry = self._pod_pids.pop(name, None)
        if entry is None:
            return
        try:
            root = psutil.Process(entry[1])
            tree = [root, *root.children(recursive=True)]
            root.terminate()
            self._replacing.append(asyncio.create_task(self._guard(
                f"stop {name}", self._kill_after(tree, KUBELET_MIN_GRACE_SECONDS))))
        except psutil.Error:
            pass
        self.killed_pods.append(name)
        if name in self._pod_template and entry[0] in self._work:  # its controller is live
            self._replacing.append(asyncio.create_task(self._guard(
                f"replace {name}", self._replace_pod(entry[0], name))))
        elif name in self._pod_template:
            self.not_replaced[name] = f"{entry[0]} is not being reconciled"

    @staticmethod
    async def _kill_after(tree: list[Any], grace: float) -> None:
        """What is left of a container's processes when its grace period ends: SIGKILLed."""
        import psutil

        await asyncio.sleep(grace)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()

    async def _pods(self, key: str, cluster: str, info: dict[str, Any], framework: str,
                    head_labels: dict[str, str], worker_labels: dict[str, str],
                    containers: tuple[dict[str, Any], dict[str, Any]] | None = None) -> list[str]:
        """One Pod per node of the local cluster (see the module docstring); returns their
        names. ``containers`` (head, worker): the Ray containers as KubeRay built them; their
        readiness probes run against the node each pod stands for (:meth:`_prober`)."""
        if framework == "ray":
            role = ("ray.io/node-type", "head", "worker")
        else:
            role = ("dask.org/component", "scheduler", "worker")
        nodes = info.get("nodes") or [None] * (1 + len(info["workers"]))
        names = [f"{cluster}-head"]
        await self._pod(key, names[0], {**head_labels, role[0]: role[1]}, info["head_pid"], None,
                        nodes[0], framework, containers)
        for i, w in enumerate(info["workers"]):
            names.append(f"{cluster}-worker-{i}")
            await self._pod(key, names[-1], {**worker_labels, role[0]: role[2]}, w["pid"],
                            w["name"], nodes[1 + i], framework, containers)
        return names

    async def _pod(self, key: str, name: str, labels: dict[str, str], pid: int,
                   fw_name: str | None, node: dict[str, Any] | None, framework: str,
                   containers: tuple[dict[str, Any], dict[str, Any]] | None) -> None:
        """The Pod standing for one node (``fw_name`` None: the head), Running, with its
        readiness probe run by :meth:`_prober`."""
        path = PODS.format(ns=self.ns)
        env = ([{"name": "DASK_WORKER_NAME", "value": fw_name}]
               if fw_name and framework == "dask" else [])
        container = {"name": "node", "image": "local", "env": env}
        if containers is not None:
            container = {**containers[1 if fw_name else 0], "name": "node", "image": "local"}
        self.pod_specs[name] = container
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.ns, "labels": labels},
                "spec": {"containers": [container]}}
        async with self._session.post(path, data=json.dumps(body),
                                      headers={"Content-Type": "application/json"}) as r:
            r.raise_for_status()
        self._pod_pids[name] = (key, pid)
        if fw_name:  # a worker: what its controller would make again if it were deleted
            self._pod_template[name] = (labels, framework, containers)
        status = {"phase": "Running"}
        if framework == "ray" and fw_name:
            status["podIP"] = fw_name
        probe = container.get("readinessProbe")
        # Not Ready until the probe first succeeds; a pod without one is Ready once running
        # (here: its process is up; the local cluster waited for its workers).
        status.update(self._readiness_status(probe is None))
        async with self._session.patch(f"{path}/{name}/status", data=json.dumps({"status": status}),
                                       headers=MERGE) as r:
            r.raise_for_status()
        if probe is not None:
            self.pod_ready[name] = False
            self._probers[key].append(asyncio.create_task(
                self._prober(name, probe, self._probe_targets(node, containers, fw_name))))

    async def _replace_pod(self, key: str, gone: str) -> None:
        """A worker pod was deleted: its controller makes a new one. KubeRay's RayCluster
        reconciler creates pods until the worker group has its replicas again
        (ray-operator/controllers/ray/raycluster_controller.go, ``reconcilePods``: a new pod,
        a new name and IP, whose Ray node registers as a new node); the fake Dask operator's
        worker is a Deployment, whose ReplicaSet makes a new pod from the same template (the
        same ``DASK_WORKER_NAME``). Here: one more local worker joins the cluster."""
        labels, framework, containers = self._pod_template.pop(gone)
        cluster = self._clusters.get(key)
        if cluster is None or cluster.proc is None or cluster.proc.returncode is not None:
            self.not_replaced[gone] = f"its cluster {key} is gone"
            return
        env_name = ""
        if framework == "dask":
            env_name = next(e["value"] for e in self.pod_specs[gone].get("env") or []
                            if e["name"] == "DASK_WORKER_NAME")
        w = await cluster.add_worker(env_name)
        base = gone.rsplit("-", 1)[0]
        name = f"{base}-{secrets.token_hex(3)[:5]}"
        await self._pod(key, name, labels, w["pid"], w["name"], w.get("node"), framework,
                        containers)
        self.replaced_pods[gone] = (name, time.time())

    # -- kubelet: readiness probes -----------------------------------------------------------
    @staticmethod
    def _readiness_status(ready: bool) -> dict[str, Any]:
        return {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "lastTransitionTime": _now()},
                               {"type": "ContainersReady", "status": "True" if ready else "False",
                                "lastTransitionTime": _now()}],
                "containerStatuses": [{"name": "node", "ready": ready, "started": True,
                                       "restartCount": 0, "image": "local", "imageID": "",
                                       "state": {"running": {"startedAt": _now()}}}]}

    @staticmethod
    def _probe_targets(node: dict[str, Any] | None, containers: Any, fw_name: str | None
                       ) -> dict[int, tuple[str, int]]:
        """Container port -> where it is served here: the KubeRay probe ports (the dashboard
        agent's, the head's dashboard) map to the ports the local engine gave that node."""
        if node is None:
            return {}
        container = containers[1 if fw_name else 0]
        targets: dict[int, tuple[str, int]] = {}
        for field in ("readinessProbe", "livenessProbe"):
            probe = container.get(field) or {}
            if "httpGet" in probe:
                targets[int(probe["httpGet"]["port"])] = (node["ip"], node["agent_port"])
            for port in re.findall(r"localhost:(\d+)/api/(\w+)", " ".join(
                    (probe.get("exec") or {}).get("command") or [])):
                if port[1] == "gcs_healthz" and "dashboard_port" in node:
                    targets[int(port[0])] = (node["dashboard_host"], node["dashboard_port"])
                else:
                    targets[int(port[0])] = (node["ip"], node["agent_port"])
        return targets

    def _image_path(self) -> str:
        """A PATH holding only ``image_tools`` (links to this host's): what an exec probe finds
        in the container."""
        if self._probe_path is None:
            import shutil
            import tempfile

            self._probe_path = tempfile.mkdtemp(prefix="fake-image-bin-")
            for tool in self.image_tools:
                found = shutil.which(tool)
                if found:
                    os.symlink(found, os.path.join(self._probe_path, tool))
        return self._probe_path

    async def probe(self, probe: dict[str, Any],
                    targets: dict[int, tuple[str, int]]) -> tuple[bool, str]:
        """One run of a probe as the kubelet runs it (pkg/kubelet/prober/prober.go): httpGet
        succeeds on a status in [200, 400); exec on exit code 0, in the container (here: with
        the image's PATH, ``localhost:<port>`` rewritten to where the node serves that port).
        Returns (success, the kubelet's failure message)."""
        timeout = float(probe.get("timeoutSeconds") or 1)
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = int(get["port"])
            host, real = targets.get(port, ("127.0.0.1", port))
            url = f"http://{host}:{real}{get.get('path') or '/'}"
            try:
                async with self._session.get(url,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    await r.read()
                    if 200 <= r.status < 400:
                        return True, ""
                    return False, f"HTTP probe failed with statuscode: {r.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                return False, f'Get "{url}": {type(e).__name__}: {e}'
        command = list((probe.get("exec") or {}).get("command") or [])
        if not command:
            return False, "probe has no handler"
        for port, (host, real) in targets.items():
            command = [c.replace(f"localhost:{port}/", f"{host}:{real}/") for c in command]
        import shutil

        path = self._image_path()
        exe = shutil.which(command[0], path=path)
        if exe is None:
            return False, f'exec: "{command[0]}": executable file not found in $PATH'
        proc = await asyncio.create_subprocess_exec(
            exe, *command[1:], env={"PATH": path}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout + 1)
        except (TimeoutError, asyncio.CancelledError) as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            if isinstance(e, asyncio.CancelledError):
                raise
            return False, f"command timed out after {timeout:g}s"
        if proc.returncode == 0:
            return True, ""
        return False, (out.decode(errors="replace").strip()
                       or f"command exited with {proc.returncode}")

    async def _prober(self, pod: str, probe: dict[str, Any],
                      targets: dict[int, tuple[str, int]]) -> None:
        """The kubelet's readiness worker (pkg/kubelet/prober/worker.go): not Ready until a
        success, Ready until failureThreshold failures in a row; every failure is a Warning
        ``Unhealthy`` Event on the pod ("Readiness probe failed: ..."). Times are scaled
        (``probe_period``; no initial delay): simpler, never more lenient."""
        ready, failures, said = False, 0, None
        threshold = int(probe.get("failureThreshold") or 3)
        while True:
            ok, why = await self.probe(probe, targets)
            failures = 0 if ok else failures + 1
            now = ok or (ready and failures < threshold)
            if now != ready:
                ready = now
                self.pod_ready[pod] = ready
                body = json.dumps({"status": self._readiness_status(ready)})
                async with self._session.patch(f"{PODS.format(ns=self.ns)}/{pod}/status",
                                               headers=MERGE, data=body) as r:
                    if r.status == 404:
                        return
                    r.raise_for_status()
            if not ok and why != said:  # the recorder aggregates repeats into one Event
                said = why
                await self._event("v1", "Pod", pod, "Unhealthy", f"Readiness probe failed: {why}",
                                  "kubelet")
            await asyncio.sleep(self.probe_period)

    async def _guard(self, key: str, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a harness bug must be visible, not a silent hang
            print(f"fake controller {key}: {type(e).__name__}: {e}", file=sys.stderr)
            raise

    async def _patch_status(self, plural_path: str, name: str, status: dict[str, Any]) -> None:
        # DaskCluster's CRD declares no status subresource: the Dask operator patches the
        # object itself, as done here.
        sub = "" if plural_path == DASKCLUSTERS else "/status"
        async with self._session.patch(f"{plural_path.format(ns=self.ns)}/{name}{sub}",
                                       data=json.dumps({"status": status}), headers=MERGE) as r:
            if r.status == 404:  # deleted meanwhile
                return
            r.raise_for_status()

    async def _cluster(self, key: str, framework: str, workers: int,
                       env: dict[str, str] | None = None) -> dict[str, Any]:
        """Start the local cluster that stands for the pods. A head container that exits
        during start-up is restarted, as the kubelet restarts any container of a
        ``restartPolicy: Always`` pod (KubeRay's head and worker pods, Dask's Deployments),
        after the CrashLoopBackOff delay (pkg/kubelet/kubelet.go: ``backOffPeriod`` 10 s,
        doubling); a fake that gave up at once would be stricter than the real one."""
        delay = 10.0
        for attempt in range(1, 4):
            cluster = LocalCluster(framework, workers)
            self._clusters[key] = cluster
            try:
                return await cluster.start(env=env)
            except RuntimeError as e:
                if attempt == 3:
                    raise
                print(f"fake controller {key}: {e}; restarting after {delay:.0f} s "
                      "(CrashLoopBackOff)", file=sys.stderr)
                await cluster.stop()
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- API helpers -----------------------------------------------------------------------
    async def _create(self, plural_path: str, body: dict[str, Any]) -> None:
        async with self._session.post(plural_path.format(ns=self.ns), data=json.dumps(body),
                                      headers={"Content-Type": "application/json"}) as r:
            if r.status != 409:
                r.raise_for_status()

    async def _get(self, path: str) -> dict[str, Any] | None:
        async with self._session.get(path.format(ns=self.ns)) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json()

    async def _event(self, api_version: str, kind: str, name: str, reason: str, message: str,
                     component: str) -> None:
        """A Warning Event as a controller's recorder writes it (core v1, lastTimestamp)."""
        now = _now()
        await self._create(EVENTS, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": self.ns},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name,
                               "namespace": self.ns},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": component}})

    async def _refusal(self, obj_name: str, pod_spec: dict[str, Any], pod_name: str) -> str | None:
        """Why the API server would refuse this pod (None: admitted)."""
        if obj_name in self.reject_pods:
            return f'pods "{pod_name}" is forbidden: {self.reject_pods[obj_name]}'
        account = pod_spec.get("serviceAccountName") or "default"  # "default" always exists
        if account != "default" and await self._get(f"{SERVICEACCOUNTS}/{account}") is None:
            return (f'pods "{pod_name}" is forbidden: error looking up service account '
                    f'{self.ns}/{account}: serviceaccount "{account}" not found')
        return None

    async def _admitted(self, obj_name: str, pod_spec: dict[str, Any], pod_name: str,
                        event: tuple[str, str, str, str, str]) -> None:
        """Until the pod would be admitted; the first refusal becomes ``event`` (apiVersion,
        kind, name, reason, component) with the controller's message prefix in front."""
        posted = False
        while (refusal := await self._refusal(obj_name, pod_spec, pod_name)) is not None:
            if not posted:
                api_version, kind, name, reason, component = event
                prefix = ("Error creating: " if reason == "FailedCreate"
                          else f"Failed to create head Pod {self.ns}/{pod_name}, ")
                await self._event(api_version, kind, name, reason, prefix + refusal, component)
                posted = True
            await asyncio.sleep(0.5)

    async def _stuck(self, obj_name: str, pod_name: str, labels: dict[str, str]) -> bool:
        """``stuck_pods``: the object's pod exists but its container waits forever."""
        if obj_name not in self.stuck_pods:
            return False
        reason, message = self.stuck_pods[obj_name]
        await self._create(PODS, {"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": pod_name, "namespace": self.ns,
                                               "labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "local"}]}})
        async with self._session.patch(f"{PODS.format(ns=self.ns)}/{pod_name}/status",
                                       headers=MERGE,
                                       data=json.dumps({"status": {"phase": "Pending",
                                                                   "containerStatuses": [
                                           {"name": "main", "ready": False, "restartCount": 0,
                                            "image": "local", "imageID": "",
                                            "state": {"waiting": {"reason": reason,
                                                                  "message": message}}}]}})) as r:
            r.raise_for_status()
        return True

    async def _resolve_env(self, env: list[dict[str, Any]]) -> dict[str, str]:
        """Literal values and ``secretKeyRef``s, read from the API as the kubelet does."""
        out = {}
        for e in env:
            if "value" in e:
                out[e["name"]] = e["value"]
            elif ref := (e.get("valueFrom") or {}).get("secretKeyRef"):
                secret = await self._get(f"{SECRETS}/{ref['name']}")
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    raise RuntimeError(f"CreateContainerConfigError: secret {ref['name']!r} or its "
                                       f"key {ref['key']!r} not found")
                out[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return out

    # -- KubeRay ---------------------------------------------------------------------------
    async def _rayjob(self, key: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        rc = spec["rayClusterSpec"]
        self.starts[key] += 1
        invalid = kuberay_validate_auth(rc)
        if invalid is not None:  # rayjob_controller.go: the spec is checked before anything
            await self._patch_status(RAYJOBS, name, {
                "jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
                "message": f"The RayJob spec is invalid: {invalid}"})
            return
        cluster = f"{name}-raycluster"
        await self._patch_status(RAYJOBS, name, {"jobDeploymentStatus": "Initializing",
                                                 "jobStatus": "", "startTime": _now(),
                                                 "rayClusterName": cluster})
        if name in self.never_ready:
            return
        auth = rc.get("authOptions")
        if (auth or {}).get("mode") == "token" and not auth.get("secretName"):
            token = base64.b64encode(secrets.token_bytes(32)).decode()  # generateRandomToken(32)
            self._secrets[key] = cluster
            await self._create(SECRETS, {
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": cluster, "namespace": self.ns,
                             "labels": {"ray.io/cluster": cluster}},
                "data": {"auth_token": base64.b64encode(token.encode()).decode()}})
        head_tpl = rc["headGroupSpec"]["template"]
        await self._admitted(name, head_tpl["spec"], f"{cluster}-head-",
                             ("ray.io/v1", "RayCluster", cluster, "FailedToCreateHeadPod",
                              "raycluster-controller"))
        if await self._stuck(name, f"{cluster}-head", head_tpl["metadata"].get("labels", {})):
            return
        head = head_tpl["spec"]["containers"][0]
        try:
            pod_env = await self._resolve_env(kuberay_token_env(head.get("env", []), cluster, auth))
        except RuntimeError as e:  # the kubelet cannot make the container: it waits
            self.stuck_pods[name] = ("CreateContainerConfigError", str(e).split(": ", 1)[1])
            await self._stuck(name, f"{cluster}-head", head_tpl["metadata"].get("labels", {}))
            return
        self.auth_env[key] = {k: v for k, v in pod_env.items() if k.startswith("RAY_AUTH_")}
        workers = sum(g["replicas"] for g in rc["workerGroupSpecs"])
        # common/pod.go BuildPod: the Ray containers with KubeRay's probes.
        group = rc["workerGroupSpecs"][0]
        containers = (kuberay_probes(head, "head", rc["headGroupSpec"].get("rayStartParams") or {},
                                     rc.get("rayVersion")),
                      kuberay_probes(group["template"]["spec"]["containers"][0], "worker",
                                     group.get("rayStartParams") or {}, rc.get("rayVersion")))
        env = {}
        if not self.fast:
            info = await self._cluster(key, "ray", workers, env=self.auth_env[key])
            env = {"RAY_ADDRESS": info["address"], "TESTBED_NODE_IP": info["head_ip"]}
            pods = await self._pods(key, cluster, info, "ray",
                                    rc["headGroupSpec"]["template"]["metadata"].get("labels", {}),
                                    group["template"]["metadata"].get("labels", {}), containers)
            # raycluster_controller.go calculateStatus: the RayCluster is ``ready`` once every
            # pod is running and Ready; rayjob_controller.go keeps the RayJob Initializing until
            # then. A probe that never passes keeps it there.
            while not all(self.pod_ready.get(p) for p in pods):
                await asyncio.sleep(0.1)
        else:
            await self._fast_ready(containers)
        await self._patch_status(RAYJOBS, name, {
            "jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "rayClusterName": cluster,
            "dashboardURL": f"{name}-head-svc.{self.ns}.svc:8265", "jobId": f"{name}-job"})
        # The driver runs on the head (the Ray job supervisor's child): the head's environment.
        env.update(pod_env)
        runtime = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}") or {}
        env.update(runtime.get("env_vars") or {})
        code = await self._execute(key, shlex.split(spec["entrypoint"]), env)
        await self._patch_status(RAYJOBS, name, {
            "jobStatus": "SUCCEEDED" if code == 0 else "FAILED",
            "jobDeploymentStatus": "Complete" if code == 0 else "Failed",
            "endTime": _now(), "message": "" if code == 0 else f"driver exited with code {code}"})
        self.finished_at[key] = time.monotonic()
        if spec.get("shutdownAfterJobFinishes") and key in self._clusters:
            await self._stop_cluster(key)

    async def _fast_ready(self, containers: tuple[dict[str, Any], ...]) -> None:
        """``fast``: no nodes to probe. An httpGet probe counts as passed; an exec probe runs
        as written (with the image's PATH, nothing answering on localhost), so a RayJob with
        exec probes never becomes ready here: stricter than a real cluster, never more lenient."""
        for c in containers:
            probe = c.get("readinessProbe") or {}
            while "exec" in probe and not (await self.probe(probe, {}))[0]:
                await asyncio.sleep(self.probe_period)

    # -- Dask operator ---------------------------------------------------------------------
    async def _daskcluster(self, key: str, obj: dict[str, Any]) -> None:
        """dask-kubernetes (dask_kubernetes/operator/controller/controller.py):
        ``daskcluster_create`` sets ``Created``; ``daskcluster_create_components`` creates the
        scheduler Deployment, its Service and the worker group and sets ``Pending``;
        ``handle_scheduler_service_status`` sets ``Running`` as soon as the (ClusterIP)
        Service has a status: before any pod exists. The Service's address works from then
        on (:class:`ServiceAddress`), refusing connections until the scheduler is up.

        The two handlers race (dask/dask-kubernetes#968, fixed by #977 after the 2026.3.0
        release we run): the Service's handler can write ``Running`` before the components
        handler writes its ``Pending``, and the DaskCluster then stays ``Pending`` for good.
        Seen here with the real controller (one cluster of about a dozen). The fake always
        takes that order, the stricter one: ``Running``, then ``Pending`` for good."""
        name = obj["metadata"]["name"]
        self.starts[key] += 1
        await self._patch_status(DASKCLUSTERS, name, {"phase": "Created"})
        if name in self.never_ready:
            return
        workers = obj["spec"]["worker"]["replicas"]
        scheduler = obj["spec"]["scheduler"]
        dns = f"{name}-scheduler.{self.ns}.svc"
        service = None
        self._scheduler_up.setdefault(dns, asyncio.Event())
        if self.fast:
            self._dask_addresses[dns] = "tcp://127.0.0.1:1"
        else:
            service = self._services[key] = ServiceAddress()
            self._dask_addresses[dns] = f"tcp://127.0.0.1:{service.port}"
        await self._patch_status(DASKCLUSTERS, name, {"phase": "Running"})
        await self._patch_status(DASKCLUSTERS, name, {"phase": "Pending"})
        if name in self.late_scheduler:  # e.g. a slow image pull: the pod comes later
            await asyncio.sleep(self.late_scheduler[name])
        # dask-kubernetes: the scheduler is Deployment <name>-scheduler; its ReplicaSet makes the
        # pod.
        await self._admitted(name, scheduler["spec"], f"{name}-scheduler-6d5f7c9b8-",
                             ("apps/v1", "ReplicaSet", f"{name}-scheduler-6d5f7c9b8",
                              "FailedCreate",
                              "replicaset-controller"))
        if await self._stuck(name, f"{name}-scheduler-6d5f7c9b8-x2x4p",
                             {**obj["metadata"].get("labels", {}),
                              **(scheduler.get("metadata") or {}).get("labels", {})}):
            return
        if service is None:
            self._scheduler_up[dns].set()
        else:
            info = await self._cluster(key, "dask", workers)
            spec = obj["spec"]
            await self._pods(key, name, info, "dask",
                             (spec["scheduler"].get("metadata") or {}).get("labels", {}),
                             (spec["worker"].get("metadata") or {}).get("labels", {}))
            host, _, port = info["address"].removeprefix("tcp://").rpartition(":")
            await service.serve(host, int(port))
            self.scheduler_up_at[key] = time.time()
            self._scheduler_up[dns].set()

    # -- kubelet ---------------------------------------------------------------------------
    async def _job(self, key: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        self.starts[key] += 1
        template = obj["spec"]["template"]
        await self._admitted(name, template["spec"], f"{name}-",
                             ("batch/v1", "Job", name, "FailedCreate", "job-controller"))
        if await self._stuck(name, f"{name}-x7k2q",
                             (template.get("metadata") or {}).get("labels", {})):
            return
        c = template["spec"]["containers"][0]
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        waits = []
        for i, arg in enumerate(argv):  # cluster DNS: the scheduler Service's name
            m = re.fullmatch(r"tcp://([^:/]+):\d+", arg)
            if m and m.group(1) in self._dask_addresses:
                argv[i] = self._dask_addresses[m.group(1)]
                waits.append(self._scheduler_up[m.group(1)])

        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        self.job_started_at[key] = time.time()
        await self._patch_status(JOBS, name, {"startTime": _now(), "active": 1})
        if self.fast:  # the fast fake runner, like the real one, waits for its scheduler
            for up in waits:
                await up.wait()
        code = await self._execute(key, argv, env)
        if code == 0:
            status = {"active": 0, "succeeded": 1, "completionTime": _now(), "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}
        else:
            msg = "Job has reached the specified backoff limit"
            status = {"active": 0, "failed": 1, "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": msg},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": msg}]}
        await self._patch_status(JOBS, name, status)
        self.finished_at[key] = time.monotonic()

    # -- running a runner ------------------------------------------------------------------
    async def _execute(self, key: str, argv: list[str], env: dict[str, str]) -> int:
        if self.gate is not None:
            await self.gate.wait()
        name = key.split("/", 1)[1]
        target = name if name in self.crash else name.removesuffix("-runner")
        if target in self.crash and self.crash[target] != 0:
            self.crash[target] -= 1  # a negative count crashes every time
            self.exits[key] = 1
            return 1  # e.g. the runner killed or its image unable to start: nothing published
        if self.fast:
            await self._publish_fake(argv)
            self.exits[key] = 0
            return 0
        proc = await asyncio.create_subprocess_exec(*argv, env=self._process_env(env),
                                                    start_new_session=True,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        self._procs[key] = proc
        _, err = await proc.communicate()
        self._procs.pop(key, None)
        self.exits[key] = proc.returncode
        if proc.returncode:
            sys.stderr.write(f"[{key} exited {proc.returncode}]\n{err.decode()[-3000:]}\n")
        return proc.returncode

    def _process_env(self, env: dict[str, str]) -> dict[str, str]:
        """A local process standing for a container: ``env`` over ours, the emulator's
        kubeconfig in place of the service account, the venv's tools (``testbed``, ``dask``)."""
        return {**os.environ, **env, "KUBECONFIG": self.kubeconfig,
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "operator"), HERE])}

    async def _kill(self, key: str) -> None:
        proc = self._procs.pop(key, None)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _publish_fake(self, argv: list[str]) -> None:
        from bench.kube.channel import build_result_configmap, parse_target

        target = argv[argv.index("--result-configmap") + 1]
        ns, name = parse_target(target)
        body = build_result_configmap(ns, name, fake_records(argv[2:]))
        async with self._session.post(CONFIGMAPS.format(ns=ns), json=body) as r:
            r.raise_for_status()


async def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.05) -> Any:
    """Await until ``predicate()`` (sync or async) is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll)
