"""Ray: tasks, the object store and Ray's joblib backend.

The engine itself: connecting the driver, the executor vocabulary and what it measures. How a
local cluster's processes are started is in :mod:`.ray_launch`, token authentication in
:mod:`.ray_auth`, the samplers and the fault watch in :mod:`.ray_observe`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psutil

from bench import lifecycle
from bench.errors import RunError, error_summary

from . import ray_auth
from .base import Engine, FaultWatch, wait_until
from .ray_auth import AuthEnv
from .ray_launch import (
    free_port,
    head_command,
    head_object_store,
    next_loopback,
    node_env,
    port_open,
    worker_command,
)
from .ray_observe import RayFaultWatch, ray_nodes, start_samplers
from .retry import retry_until

__all__ = ["RayEngine", "free_port"]  # free_port: its home is .ray_launch


def _gcs_host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a GCS address, or None for ``auto`` (a RayJob driver on the head: Ray
    finds the local cluster from RAY_ADDRESS); anything else is an error."""
    if address.startswith("ray://"):
        raise RunError(
            f"address {address!r}: Ray Client (ray://) adds a proxy hop to every call; run "
            "the runner on the head (RayJob) and pass the GCS address host:port")
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"address {address!r}: expected the Ray GCS address as host:port")
    return host, int(port)


def _no_auto_init() -> None:
    """Turn off Ray's auto-init in this driver. Ray wraps its public API (``ray.put``,
    ``ray.get``, ``ray.cancel``, ...) so that a call while disconnected runs ``ray.init()`` with
    no address (ray/_private/auto_init_hook.py, which reads ``RAY_ENABLE_AUTO_CONNECT`` once, at
    import): that connects to the newest cluster recorded under /tmp/ray, a user's own or
    another run's, or starts a new one. A timed-out trial's Ray Data executor did exactly that
    after its cluster was stopped. The testbed always connects explicitly, so a call after
    ``ray.shutdown()`` must fail instead."""
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False


class RayEngine(Engine):
    framework = "ray"
    counts_tasks = True

    def __init__(self, workers: int, address: str | None = None, **kw: Any):
        super().__init__(workers, address, **kw)
        self._samplers: list[Any] = []
        self._remotes: dict[Callable[..., Any], Any] = {}
        self._worker_nodes: list[str] = []
        self._head_ip: str | None = None
        self._gcs_address = ""
        self._worker_ips: list[str] = []
        self._obj_store = 0
        self._cluster_auth: AuthEnv = {}
        self._token_path: str | None = None
        self.auth_mode: str | None = None  # what the driver connected with
        self._saved_env: AuthEnv = {}
        self._dashboard_url = ""  # host:port, as ray.init reports it ("" when none runs)

    # -- lifecycle -------------------------------------------------------------------------
    def _auth_env(self) -> AuthEnv:
        """The authentication every process of the cluster we start, and our driver, gets
        (see :mod:`.ray_auth`): always explicit, a fresh token per cluster in token mode."""
        if self.ray_settings.auth_mode == "disabled":
            return dict(ray_auth.DISABLED)
        if self._token_path is None:
            self._token_path = ray_auth.new_token_file(self._workdir_path("tb-ray-"))
        return ray_auth.token_env(self._token_path)

    def _start_local(self) -> None:
        work = self._workdir_path("tb-ray-")
        head_ip = next_loopback()
        port = free_port()
        auth = self._auth_env()
        obj_store = head_object_store(self.memory_per_worker)
        self._spawn(head_command(head_ip, port, obj_store, os.path.join(work, "h"),
                                 self.observe_faults or self.dashboard),
                    env={**node_env(self.cpus_per_worker), **self.ray_settings.head_env(),
                         **auth},
                    log=os.path.join(work, "head.log"))
        self._head_ip = head_ip
        address = f"{head_ip}:{port}"
        self._gcs_address = address
        # Wait until the GCS answers before adding workers (they'd fail to register otherwise).
        wait_until(lambda: port_open(head_ip, port), self.startup_timeout, "the Ray head's GCS",
                   check=lambda: self._check_alive("ray head"))
        self._obj_store, self._cluster_auth = obj_store, auth
        self._worker_ips = []  # a restarted cluster's nodes are new ones
        for _ in range(self.workers):
            self.add_worker()
        self._connect(address, node_ip=head_ip, auth=auth)

    def add_worker(self) -> str:
        """Start one more worker node of the cluster this engine started (on its own loopback
        address, like a new pod's IP) and return that address, the node's name in Ray."""
        i = len(self._worker_ips)
        work = self._workdir_path("tb-ray-")
        ip = next_loopback()
        self._worker_ips.append(ip)
        self._spawn(worker_command(self._gcs_address, ip, self.cpus_per_worker,
                                   self.memory_per_worker, self._obj_store,
                                   os.path.join(work, f"w{i}")),
                    env={**node_env(self.cpus_per_worker), **self._cluster_auth},
                    log=os.path.join(work, f"worker{i}.log"))
        return ip

    def _connect(self, address: str, node_ip: str | None = None,
                 auth: AuthEnv | None = None) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        _no_auto_init()
        auth = auth if auth is not None else ray_auth.auth_from_environment()
        self._saved_env = {k: os.environ.get(k) for k in auth}
        self.auth_mode = ray_auth.use_driver_auth(auth)
        kw: dict[str, Any] = {}
        node_ip = node_ip or os.environ.get("TESTBED_NODE_IP")
        if node_ip:
            kw["_node_ip_address"] = node_ip
        gcs = _gcs_host_port(address)
        if gcs is not None:
            # ray.init retries an unreachable GCS for minutes: check within our timeout.
            try:
                wait_until(lambda: port_open(*gcs), self.connect_timeout,
                           f"the Ray GCS at {address}", poll=0.5)
            except RunError as e:
                raise RunError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
            self._check_token(address)
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self._init_driver(ray, address, kw)
            lifecycle.reassert_signal_handlers()
        except Exception as e:
            if ray_auth.auth_failure(e):
                raise ray_auth.auth_error(address, self.auth_mode) from None
            raise RunError(f"cannot connect to the Ray cluster at {address!r}: "
                           f"{error_summary(e)}") from None

    def _init_driver(self, ray: Any, address: str, kw: dict[str, Any]) -> None:
        """``ray.init``, retried within ``connect_timeout``: its own window to find the
        driver's raylet registered in the GCS (``services.get_node_to_connect_for_driver``) and
        to read the session name is fixed, and on a loaded 2-core machine a fresh head's raylet
        can register after it closes; ``ray.init`` then raises a bare ``ConnectionError``."""
        def between() -> None:
            if self._procs:
                self._check_alive("ray head")
            with contextlib.suppress(Exception):
                ray.shutdown()

        ctx = retry_until(lambda _left: ray.init(address=address, log_to_driver=False,
                                           logging_level="ERROR", configure_logging=False, **kw),
                    self.connect_timeout, retry_on=(ConnectionError,),
                    give_up=ray_auth.auth_failure, between=between)
        self._dashboard_url = str(getattr(ctx, "dashboard_url", "") or "")

    def _check_token(self, address: str) -> None:
        """Ask the GCS once, with our token, before ``ray.init``: a missing or wrong token is
        then one clear error at once, not ``ray.init``'s 20 s of retries (each logging
        ``InvalidAuthToken``) ending in a bare ``ConnectionError``."""
        if not ray_auth.gcs_accepts(address, ray_auth.driver_token()):
            raise ray_auth.auth_error(address, self.auth_mode,
                                      ": it is not this cluster's token")

    def _wait_for_workers(self, timeout: float) -> None:
        import ray

        def ready() -> bool:
            nodes = [n for n in ray_nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
            self._worker_nodes = [n["NodeID"] for n in nodes]
            return len(nodes) >= self.workers

        check = (lambda: self._check_alive("a ray node")) if self.started_cluster else None
        wait_until(ready, timeout, f"{self.workers} Ray worker node(s) to join", poll=0.2,
                   check=check)
        self._worker_nodes = self._worker_nodes[: self.workers]
        cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]  # unannotated
        if cpus:
            self.cpus_per_worker = cpus / max(1, len(self._worker_nodes))
        self._samplers = start_samplers(self._worker_nodes)

    def _disconnect(self) -> None:
        import ray

        self._samplers = []
        self._remotes.clear()
        if ray.is_initialized():
            ray.shutdown()
        if self._saved_env:  # the driver's environment as it was before we connected
            ray_auth.use_driver_auth(self._saved_env)
            self._saved_env = {}

    # -- vocabulary ------------------------------------------------------------------------
    def _remote(self, fn: Callable[..., Any]) -> Any:
        import ray

        r = self._remotes.get(fn)
        if r is None:
            r = ray.remote(max_retries=self.ray_settings.max_retries, retry_exceptions=False,
                           scheduling_strategy="SPREAD")(fn)
            self._remotes[fn] = r
        return r

    def put(self, obj: Any) -> Any:
        import ray

        return ray.put(obj)

    def release(self, handle: Any) -> None:
        del handle  # the object store frees it once no reference is left

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]:
        import ray

        r = self._remote(fn)
        self.tasks += len(items)
        refs = [r.remote(item, *shared) for item in items]
        hook = self.on_task_done
        if hook is not None:
            for ref in refs:
                ref.future().add_done_callback(lambda _f: hook())
        return ray.get(refs)

    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]:
        import ray

        r = self._remote(fn)
        self.tasks += count
        if sync:
            return [ray.get(r.remote(arg)) for _ in range(count)]
        return ray.get([r.remote(arg) for _ in range(count)])

    @contextmanager
    def _joblib(self) -> Iterator[None]:
        from joblib import parallel_config  # type: ignore[import-untyped]  # no stubs
        from ray.util.joblib import register_ray

        register_ray()  # type: ignore[no-untyped-call]  # unannotated
        with parallel_config(backend="ray", n_jobs=self.parallelism):
            yield

    def joblib(self) -> AbstractContextManager[None]:
        return self._joblib()

    # -- measurement -----------------------------------------------------------------------
    def start_sampling(self, interval: float) -> None:
        import ray

        ray.get([s.start.remote(interval) for s in self._samplers])

    def stop_sampling(self) -> list[dict[str, Any]]:
        import ray

        out: list[dict[str, Any]] = []
        for s in self._samplers:
            try:
                out.append(ray.get(s.stop.remote(), timeout=30))
            except Exception as e:  # a dead node: its figures are gone, say so
                out.append({"id": None, "error": error_summary(e)})
        return out

    def dashboards(self) -> dict[str, str]:
        url = self._dashboard_url
        if not url:
            return {}
        return {"ray": url if "://" in url else f"http://{url}"}

    @contextmanager
    def _artifacts(self, folder: str) -> Iterator[dict[str, str]]:
        import ray

        out: dict[str, str] = {}
        since_us = time.time() * 1e6
        yield out
        # ray.timeline(): Chrome-trace events of every worker and driver since the cluster
        # started ("ts" in microseconds since the epoch; ray/_private/state.py
        # chrome_tracing_dump, which waits 1 s for the events to reach the GCS). Keep this
        # block's.
        # (Its warning that it will read from the dashboard later is not for our user.)
        state_log = logging.getLogger("ray._private.state")
        level = state_log.level
        state_log.setLevel(logging.ERROR)
        try:
            events = [e for e in ray.timeline() if float(e.get("ts", 0)) >= since_us]
        finally:
            state_log.setLevel(level)
        path = os.path.join(folder, "ray-timeline.json")
        with open(path, "w") as f:
            json.dump(events, f)
        out["ray_timeline"] = path

    def artifacts(self, folder: str) -> AbstractContextManager[dict[str, str]]:
        return self._artifacts(folder)

    def worker_processes(self) -> list[psutil.Process]:
        procs = []
        for p in self._procs[1:]:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(p.pid))
        return procs

    def worker_names(self) -> list[str]:
        return list(self._worker_ips)

    def settings(self) -> dict[str, Any]:
        r = self.ray_settings
        out: dict[str, Any] = {"max_retries": r.max_retries, "auth_mode": self.auth_mode}
        if self.started_cluster:  # a connected cluster's head has whatever it was given
            out.update(health_check_period_ms=r.health_check_period_ms,
                       health_check_failure_threshold=r.health_check_failure_threshold)
        return out

    _k8s_replacer = "kuberay"  # the RayCluster's worker group keeps its replicas

    def watch_faults(self) -> FaultWatch:
        return RayFaultWatch(self.replacer())

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["worker_nodes"] = list(self._worker_nodes)
        return d
