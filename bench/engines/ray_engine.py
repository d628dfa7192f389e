"""Ray: tasks, the object store and Ray's joblib backend.

Local clusters mirror a KubeRay cluster: a head node with no CPUs (it only schedules, like a
head pod started with ``num-cpus: 0``) and N worker nodes, each ``ray start`` on its own
loopback address (127.0.0.x) so that no traffic leaves loopback; Ray rewrites 127.0.0.1 to an
external interface address, other loopback addresses it keeps.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, Sequence

import psutil

from .. import lifecycle
from ..errors import RunError
from .base import Engine, FaultWatch, _replacement, wait_until

_LOOPBACK = itertools.count(2 + 253 * (os.getpid() % 250))  # a base of its own per process


_HANDED_OUT: set[int] = set()


def free_port(ip: str = "") -> int:
    """A port free on every interface, never handed out twice by this process.

    Ray's own "find a free port" races when several nodes start at once on one host, so each
    node gets explicit ports.
    """
    while True:
        with socket.socket() as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


# Per process, from an offset of its own: two testbed processes on one host (two runs, or a
# test's cluster beside a run) would otherwise both hand out block 0, 1, ... and their workers
# would fight over the same ports.
_WORKER_PORT_BLOCKS = itertools.count(os.getpid() % 60)


def _node_ports(temp_dir: str) -> list[str]:
    """Explicit ports and a temp dir of its own (for its unix sockets) for one node.

    Ray's defaults race when several nodes start at once on one host.
    """
    os.makedirs(temp_dir, exist_ok=True)
    # Worker ports from 20000 up: outside Ray's default worker range (10002-19999), which a
    # user's own Ray cluster on this host uses, and below Linux's ephemeral range (32768+).
    block = next(_WORKER_PORT_BLOCKS) % 60
    low = 20000 + block * 200
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 199}",
            f"--temp-dir={temp_dir}"]


def _ray_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


def _next_loopback() -> str:
    # 127.0.X.2 .. 127.0.X.254, cycling; each process starts at its own X (its pid), so that
    # two testbed processes' nodes do not share addresses.
    n = next(_LOOPBACK)
    return f"127.0.{(n // 253) % 250}.{2 + n % 253}"


class RayEngine(Engine):
    framework = "ray"
    counts_tasks = True

    def __init__(self, workers: int, address: str | None = None, **kw: Any):
        super().__init__(workers, address, **kw)
        self._samplers: list[Any] = []
        self._remotes: dict[Callable, Any] = {}
        self._worker_nodes: list[str] = []
        self._head_ip: str | None = None
        self._node_procs: list[Any] = []
        self._worker_ips: list[str] = []
        self._node_args: dict[str, Any] = {}
        self._token_path: str | None = None
        self.auth_mode: str | None = None  # what the driver connected with
        self._saved_env: dict[str, str | None] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        # Ray sets OMP_NUM_THREADS per task; pin the BLAS pools of the node processes too.
        threads = str(max(1, int(self.cpus_per_worker)))
        return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
                "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OPENBLAS_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads}

    def _auth_env(self) -> dict[str, str | None]:
        """The authentication every process of the cluster we start, and our driver, gets.

        Ray 2.60 (``ray/_private/authentication/authentication_token_setup.py``): ``ray start
        --head`` turns token auth on by itself whenever ``~/.ray/auth_token`` exists, unless
        ``RAY_AUTH_MODE`` is set; the C++ token loader reads ``RAY_AUTH_TOKEN``, then
        ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``. So the mode is always explicit,
        and in token mode the token is a fresh one for this cluster, in a 0600 file in the
        cluster's own temp dir, named by ``RAY_AUTH_TOKEN_PATH`` (``RAY_AUTH_TOKEN``, which
        would win over it and shows in ``ps e``, is removed).
        """
        if self.ray_settings.auth_mode == "disabled":
            return {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": None,
                    "RAY_AUTH_TOKEN_PATH": None}
        if self._token_path is None:
            path = os.path.join(self._workdir_path("tb-ray-"), "auth_token")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            self._token_path = path
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None,
                "RAY_AUTH_TOKEN_PATH": self._token_path}

    def _start_local(self) -> None:
        work = self._workdir_path("tb-ray-")
        head_ip = _next_loopback()
        port = free_port()
        common = ["--block", "--disable-usage-stats"]
        auth = self._auth_env()
        # The driver runs on the head (as a RayJob's does), so its ray.put() lands in the head's
        # object store: size it like a worker's, or large datasets spill to disk.
        obj_store = max(78 * 2**20, min(self.memory_per_worker // 4, 2**30))
        self._spawn([_ray_bin(), "start", "--head", f"--node-ip-address={head_ip}",
                     f"--port={port}", "--num-cpus=0", f"--memory={512 * 2**20}",
                     f"--object-store-memory={obj_store}", *self._dashboard_flags(head_ip),
                     f"--ray-client-server-port={free_port()}",
                     *_node_ports(os.path.join(work, "h")), *common],
                    env={**self._env(), **self.ray_settings.head_env(), **auth},
                    log=os.path.join(work, "head.log"))
        self._head_ip = head_ip
        address = f"{head_ip}:{port}"
        self._gcs_address = address
        # Wait until the GCS answers before adding workers (they'd fail to register otherwise).
        wait_until(lambda: _port_open(head_ip, port), self.startup_timeout, "the Ray head's GCS",
                   check=lambda: self._check_alive("ray head"))
        self._node_args = {"obj_store": obj_store, "auth": auth}
        self._worker_ips = []  # a restarted cluster's nodes are new ones
        for _ in range(self.workers):
            self.add_worker()
        self._connect(address, node_ip=head_ip, auth=auth)

    def add_worker(self) -> str:
        """Start one more worker node of the cluster this engine started (on its own loopback
        address, like a new pod's IP) and return that address, the node's name in Ray."""
        i = len(self._worker_ips)
        work, args = self._workdir_path("tb-ray-"), self._node_args
        ip = _next_loopback()
        self._worker_ips.append(ip)
        self._spawn([_ray_bin(), "start", f"--address={self._gcs_address}",
                     f"--node-ip-address={ip}", f"--num-cpus={max(1, int(self.cpus_per_worker))}",
                     f"--memory={self.memory_per_worker}",
                     f"--object-store-memory={args['obj_store']}",
                     *_node_ports(os.path.join(work, f"w{i}")), "--block",
                     "--disable-usage-stats"],
                    env={**self._env(), **args["auth"]}, log=os.path.join(work, f"worker{i}.log"))
        return ip

    def _dashboard_flags(self, ip: str) -> list[str]:
        # The dashboard serves Ray's state API (task attempts, node deaths), which a faulted
        # benchmark reads; other runs skip its start-up cost. KubeRay heads always run it.
        # Its port is explicit either way: never the default 8265 a user's own head may hold.
        if not self.observe_faults:
            return ["--include-dashboard=false", f"--dashboard-port={free_port()}"]
        return ["--include-dashboard=true", f"--dashboard-host={ip}",
                f"--dashboard-port={free_port()}"]

    def _connect(self, address: str, node_ip: str | None = None,
                 auth: dict[str, str | None] | None = None) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        auth = auth if auth is not None else _auth_from_environment()
        self._saved_env = {k: os.environ.get(k) for k in auth}
        self.auth_mode = _use_driver_auth(auth)
        kw: dict[str, Any] = {}
        node_ip = node_ip or os.environ.get("TESTBED_NODE_IP")
        if node_ip:
            kw["_node_ip_address"] = node_ip
        if address.startswith("ray://"):
            raise RunError(
                f"address {address!r}: Ray Client (ray://) adds a proxy hop to every call; run "
                "the runner on the head (RayJob) and pass the GCS address host:port"
            )
        host, _, port = address.rpartition(":")
        if address == "auto":
            pass  # a RayJob driver on the head: Ray finds the local cluster (RAY_ADDRESS)
        elif not host or not port.isdigit():
            raise RunError(f"address {address!r}: expected the Ray GCS address as host:port")
        # ray.init retries an unreachable GCS for minutes: check reachability within our timeout.
        if address != "auto":
            try:
                wait_until(lambda: _port_open(host, int(port)), self.connect_timeout,
                           f"the Ray GCS at {address}", poll=0.5)
            except RunError as e:
                raise RunError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
        if address != "auto":
            self._check_token(address)
        try:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self._init_driver(ray, address, kw)
            lifecycle.reassert_signal_handlers()
        except Exception as e:
            if _auth_failure(e):
                if self.auth_mode == "disabled":
                    raise RunError(
                        f"the Ray cluster at {address!r} requires token authentication and no "
                        "token was given: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file "
                        "holding it) in the environment; ~/.ray/auth_token is never read"
                    ) from None
                raise RunError(f"the Ray cluster at {address!r} rejected the authentication "
                               "token (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)") from None
            raise RunError(f"cannot connect to the Ray cluster at {address!r}: {_short(e)}") from None

    def _init_driver(self, ray: Any, address: str, kw: dict[str, Any]) -> None:
        """``ray.init``, retried within ``connect_timeout``: its own window to find the
        driver's raylet registered in the GCS (``services.get_node_to_connect_for_driver``) and
        to read the session name is fixed, and on a loaded 2-core machine a fresh head's raylet
        can register after it closes; ``ray.init`` then raises a bare ``ConnectionError``."""
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         configure_logging=False, **kw)
                return
            except ConnectionError as e:
                if _auth_failure(e) or time.monotonic() + 1 > deadline:
                    raise
                if self._procs:
                    self._check_alive("ray head")
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(1)

    def _check_token(self, address: str) -> None:
        """Ask the GCS once, with our token, before ``ray.init``: a missing or wrong token is
        then one clear error at once, not ``ray.init``'s 20 s of retries (each logging
        ``InvalidAuthToken``) ending in a bare ``ConnectionError``."""
        if _gcs_accepts(address, _driver_token()):
            return
        if self.auth_mode == "disabled":
            raise RunError(
                f"the Ray cluster at {address!r} requires token authentication and no token "
                "was given: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding it) in "
                "the environment; ~/.ray/auth_token is never read")
        raise RunError(f"the Ray cluster at {address!r} rejected the authentication token "
                       "(RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH): it is not this cluster's token")

    def _wait_for_workers(self, timeout: float) -> None:
        import ray

        def ready() -> bool:
            nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
            self._worker_nodes = [n["NodeID"] for n in nodes]
            return len(nodes) >= self.workers

        check = (lambda: self._check_alive("a ray node")) if self.started_cluster else None
        wait_until(ready, timeout, f"{self.workers} Ray worker node(s) to join", poll=0.2,
                   check=check)
        self._worker_nodes = self._worker_nodes[: self.workers]
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus:
            self.cpus_per_worker = cpus / max(1, len(self._worker_nodes))
        self._start_samplers()

    def _disconnect(self) -> None:
        import ray

        self._samplers = []
        self._remotes.clear()
        if ray.is_initialized():
            ray.shutdown()
        if self._saved_env:  # the driver's environment as it was before we connected
            _use_driver_auth(self._saved_env)
            self._saved_env = {}

    # -- vocabulary ------------------------------------------------------------------------
    def _remote(self, fn: Callable) -> Any:
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

    def map(self, fn: Callable, items: Sequence[Any], *shared: Any) -> list[Any]:
        import ray

        r = self._remote(fn)
        self.tasks += len(items)
        refs = [r.remote(item, *shared) for item in items]
        hook = self.on_task_done
        if hook is not None:
            for ref in refs:
                ref.future().add_done_callback(lambda _f: hook())
        return ray.get(refs)

    def tiny_tasks(self, fn: Callable, arg: Any, count: int, sync: bool) -> list[Any]:
        import ray

        r = self._remote(fn)
        self.tasks += count
        if sync:
            return [ray.get(r.remote(arg)) for _ in range(count)]
        return ray.get([r.remote(arg) for _ in range(count)])

    @contextmanager
    def _joblib(self) -> Iterator[None]:
        from joblib import parallel_config
        from ray.util.joblib import register_ray

        register_ray()
        with parallel_config(backend="ray", n_jobs=self.parallelism):
            yield

    def joblib(self) -> AbstractContextManager:
        return self._joblib()

    # -- measurement -----------------------------------------------------------------------
    def _start_samplers(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        Sampler = ray.remote(num_cpus=0, max_restarts=0)(NodeSampler)
        self._samplers = [
            Sampler.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(node)
            for node in self._worker_nodes
        ]
        ray.get([s.ping.remote() for s in self._samplers])

    def start_sampling(self, interval: float) -> None:
        import ray

        ray.get([s.start.remote(interval) for s in self._samplers])

    def stop_sampling(self) -> list[dict[str, Any]]:
        import ray

        out = []
        for s in self._samplers:
            try:
                out.append(ray.get(s.stop.remote(), timeout=30))
            except Exception as e:  # a dead node: its figures are gone, say so
                out.append({"id": None, "error": _short(e)})
        return out

    def worker_processes(self) -> list[psutil.Process]:
        procs = []
        for p in self._procs[1:]:
            try:
                procs.append(psutil.Process(p.pid))
            except psutil.Error:
                pass
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


class NodeSampler:
    """A zero-CPU actor pinned to one node: samples the node's raylet and everything under it."""

    def __init__(self, node_id: str):
        self.node_id = node_id
        self._sampler = None

    def ping(self) -> int:
        return os.getpid()

    def start(self, interval: float) -> None:
        from bench.measure import TreeSampler

        raylet = psutil.Process(os.getpid()).parent()
        self._sampler = TreeSampler(raylet.pid if raylet else os.getpid(), interval)
        self._sampler.start()

    def stop(self) -> dict[str, Any]:
        from bench.measure import summarize_samples

        out = self._sampler.stop() if self._sampler else summarize_samples([], [])
        self._sampler = None
        out["id"] = self.node_id[:12]
        out["node"] = self.node_id
        return out


_DIED = ("NODE_DIED", "WORKER_DIED", "OUT_OF_MEMORY", "LOCAL_RAYLET_DIED")


class RayFaultWatch(FaultWatch):
    """Reads Ray's own records through the state API: task attempts (a retry is an attempt
    number above 0; a failed attempt carries the error type, e.g. ``NODE_DIED``) and node
    deaths (with the GCS's end time)."""

    def __init__(self, replacer: str | None = None) -> None:
        import ray

        self.replacer = replacer  # see Engine.replacer
        # The nodes before the run: a replacement is an alive node not among them.
        self.nodes_before = {n["NodeID"] for n in ray.nodes()}
        self.job_id = ray.get_runtime_context().get_job_id()
        # The state API's own address lookup (address=None) scans the host for GCS processes
        # and gives up when it finds more than one (ray/_private/services.py): any other Ray
        # cluster on the machine, a user's own included. Name ours.
        self.address = ray.get_runtime_context().gcs_address
        # The faulted run's tasks are those created from now on, by this driver (the owner
        # stamps creation_time_ms with this clock). A snapshot of earlier tasks would not do:
        # task events reach the state API about a second late.
        self.since_ms = time.time() * 1000

    def _tasks(self) -> list[Any]:
        from ray.util.state import list_tasks

        # Normal tasks only: the workload's. (Actor calls, such as the samplers' stop() just
        # before the faulted run, reach the state API up to a second late.)
        return [t for t in list_tasks(address=self.address,
                                      filters=[("job_id", "=", self.job_id)], limit=10_000,
                                      detail=True, raise_on_missing_output=False, timeout=30)
                if str(t.type) == "NORMAL_TASK"]

    def report(self, kills: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        import ray
        from ray.util.state import list_nodes

        if any(k["role"] == "head" and "at_wall" in k for k in kills):
            return {"observed": False, "reason": "the head was killed: Ray's state API (GCS "
                                                 "and dashboard) went with it"}
        killed = {k["name"] for k in kills if k["role"] == "worker" and "at_wall" in k}
        t_kill = min((k["at_wall"] for k in kills if "at_wall" in k), default=None)
        # The GCS marks a node dead after its missed health checks; wait for that (bounded; a
        # node still alive then is reported as undetected below).
        try:
            wait_until(lambda: killed <= {n["NodeManagerAddress"] for n in ray.nodes()
                                          if not n["Alive"]}, timeout, "the killed nodes' deaths",
                       poll=0.2)
        except RunError:
            pass
        if self.replacer is not None and killed:
            # KubeRay makes a new pod for each deleted worker pod; its node registers anew
            # (a new node ID, usually a new IP). Wait for as many as were killed (bounded).
            def arrived() -> bool:
                new = [n for n in ray.nodes()
                       if n["Alive"] and n["NodeID"] not in self.nodes_before]
                return len(new) >= len(killed)

            try:
                wait_until(arrived, timeout, "the replacement nodes", poll=0.5)
            except RunError:
                pass  # reported as fewer arrivals below
        listed = list_nodes(address=self.address, detail=True, limit=10_000,
                            raise_on_missing_output=False)
        nodes = [n for n in listed if n.node_ip in killed]
        arrivals = [n.start_time_ms / 1000 for n in listed
                    if n.node_id not in self.nodes_before and str(n.state) == "ALIVE"
                    and n.start_time_ms and (t_kill is None or n.start_time_ms / 1000 >= t_kill - 1)]
        # Task events reach the state API about once a second: read until two reads agree.
        rows, prev = [], None
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            try:
                rows = [t for t in self._tasks() if (t.creation_time_ms or 0) >= self.since_ms]
            except Exception as e:
                return {"observed": False, "reason": f"Ray's state API is unavailable: {_short(e)}"}
            sig = sorted((t.task_id, t.attempt_number, str(t.state)) for t in rows)
            if sig == prev and not any(str(t.state) in ("RUNNING", "PENDING_NODE_ASSIGNMENT",
                                                         "SUBMITTED_TO_WORKER") for t in rows):
                break
            prev = sig
            time.sleep(1.2)
        failed = [t for t in rows if str(t.state) == "FAILED"]
        died = [t for t in failed if str(t.error_type) in _DIED]
        ends = [n.end_time_ms / 1000 for n in nodes if n.end_time_ms]
        fail_ends = [t.end_time_ms / 1000 for t in died if t.end_time_ms]
        out: dict[str, Any] = {
            "observed": True,
            "workers_removed": sum(1 for n in nodes if str(n.state) == "DEAD"),
            # The first failure Ray reported for a task on a killed node or worker...
            "detected_after_seconds": (min(fail_ends) - t_kill
                                       if fail_ends and t_kill is not None else None),
            # ...and the GCS marking the node dead (health checks).
            "node_dead_after_seconds": (min(ends) - t_kill if ends and t_kill is not None
                                        else None),
            "task_attempts": len(rows),
            "retried_tasks": sum(1 for t in rows if t.attempt_number > 0),
            "failed_attempts": len(failed),
            "failed_by_error": dict(Counter(str(t.error_type) for t in failed)),
            "replaced_after_seconds": (min(arrivals) - t_kill
                                       if arrivals and t_kill is not None else None),
            "replacement": _replacement(self.replacer, len(killed), sorted(arrivals)[:len(killed)],
                                        t_kill),
        }
        undetected = killed - {n.node_ip for n in nodes if str(n.state) == "DEAD"}
        if undetected:
            out["undetected"] = sorted(undetected)
        return out


def _auth_from_environment() -> dict[str, str | None]:
    """A cluster we did not start (``--address``): its token comes from the environment only.

    ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` given: token mode (unless ``RAY_AUTH_MODE``
    says otherwise). ``RAY_AUTH_MODE=token`` without either: an error, because Ray would fall
    back to ``~/.ray/auth_token``, whatever that holds. Neither: ``disabled``, explicitly, so
    that nothing in the user's home turns it on.
    """
    env = os.environ
    mode = (env.get("RAY_AUTH_MODE") or "").strip().lower()
    has_token = bool(env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"))
    if mode not in ("", "token", "disabled"):
        raise RunError(f"RAY_AUTH_MODE={env['RAY_AUTH_MODE']!r}: expected 'token' or 'disabled'")
    if mode == "token" and not has_token:
        raise RunError("RAY_AUTH_MODE=token but neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is "
                       "set: give the cluster's token in the environment (~/.ray/auth_token is "
                       "never read)")
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path and not env.get("RAY_AUTH_TOKEN") and not os.path.isfile(path):
        raise RunError(f"RAY_AUTH_TOKEN_PATH={path!r}: no such file")
    if mode == "disabled" or not has_token:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token"}


def _use_driver_auth(auth: dict[str, str | None]) -> str:
    """Make this process (the driver) use ``auth`` for its next ``ray.init``; returns the mode.

    Ray caches both the mode (RayConfig) and the token (the C++ AuthenticationTokenLoader) per
    process; each cluster has its own token, so both caches are refreshed here, the way Ray's
    own ``_enable_token_auth`` and ``ensure_token_if_auth_enabled`` refresh them.
    """
    for k, v in auth.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except ImportError:  # pragma: no cover - a Ray without token auth
        pass
    return os.environ.get("RAY_AUTH_MODE", "disabled")


def _driver_token() -> str | None:
    """The token this process will send (after :func:`_use_driver_auth`), or None."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    try:
        with open(os.environ["RAY_AUTH_TOKEN_PATH"]) as f:
            return f.read().strip()
    except (KeyError, OSError):
        return None


def _gcs_accepts(address: str, token: str | None, timeout: float = 10) -> bool:
    """False only when the GCS answers UNAUTHENTICATED to ``GetClusterId`` (the first call
    every Ray client makes) with ``token`` as its bearer token, as Ray's own clients send it
    (``authorization: Bearer``; ``ray/_private/authentication/``). Anything else (an old Ray
    without the method, a slow GCS) is left to ``ray.init`` to report."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover
        return True
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout,
                              metadata=metadata)
        except grpc.RpcError as e:
            return e.code() != grpc.StatusCode.UNAUTHENTICATED
    return True


def _auth_failure(e: BaseException | None) -> bool:
    """Whether ``ray.init`` failed on authentication: its ``ConnectionError`` carries the
    ``AuthenticationError`` as its cause (``ray/_private/worker.py``, ``init``)."""
    seen = 0
    while e is not None and seen < 10:
        text = f"{type(e).__name__} {e}".lower()
        if any(s in text for s in ("authenticat", "auth token", "unauthenticated", "token-auth")):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    out = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
    cause = e.__cause__
    if cause is not None:  # ray.init's ConnectionError hides why in its cause
        lines = str(cause).strip().splitlines()
        out += f" ({type(cause).__name__}: {lines[0] if lines else ''})"[:300]
    return out
