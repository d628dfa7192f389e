"""The engine interface every workload is written against.

An engine either *connects* to an existing cluster (``address`` given: what the operator's runner
pod does) or *starts* a real local cluster with exactly N worker processes on loopback (what
``testbed run`` does).  It waits until all N workers are up before anything is timed, and it tears
down only what it started.

Workloads use a small, framework-neutral vocabulary whose implementations are each framework's
idiomatic fast path:

* ``put(obj)``: place data in the cluster once (Ray object store / Dask ``scatter`` with
  ``broadcast=True, hash=False`` / the object itself locally);
* ``map(fn, items, *shared)``: one task per item; ``shared`` are handles from ``put``;
* ``tiny_tasks(fn, arg, count, sync)``: the per-task-overhead probe;
* ``joblib()``: a context manager selecting the framework's joblib backend;
* ``dask_context()``: a context manager under which Dask collections are persisted and
  computed on this cluster (distributed client / Ray's ``ray_dask_get``); frameworks without a
  Dask scheduler raise.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from bench import lifecycle
from bench.errors import RunError

if TYPE_CHECKING:
    from bench.spec import DaskSettings, RaySettings


@dataclass
class Victim:
    """Something fault injection can kill: a worker or the head/scheduler."""

    role: str  # "worker" | "head"
    name: str  # what the framework calls it (node IP, worker name, pod name)
    kill: Callable[[], None]


VictimSource = Callable[[], list[Victim]]
"""Finds the victims of a cluster the engine connected to (the runner command injects one:
``bench.kube.faults.victim_source`` on Kubernetes)."""


class FaultWatch:
    """Observes what a framework did about killed workers during one faulted run.

    ``report(kills, timeout)`` is called after the run with each kill's wall-clock time; it
    returns what the framework itself recorded (detection, retries, recomputations).
    """

    def report(self, kills: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        return {"observed": False, "reason": f"{type(self).__name__} observes nothing"}


def _replacement(by: str | None, killed: int, arrivals: list[float],
                 t_kill: float | None) -> dict[str, Any]:
    """The fault record's ``replacement``: who was expected to bring the killed workers back
    (``by``; None: nothing does), how many came (``arrived``, of ``expected``), and when the
    last one registered with the head/scheduler (``after_seconds`` from the first kill)."""
    out: dict[str, Any] = {"by": by, "expected": killed if by else 0, "arrived": len(arrivals)}
    if arrivals and t_kill is not None:
        out["after_seconds"] = max(arrivals) - t_kill
    return out


class Engine(ABC):
    framework: str = ""

    def __init__(self, workers: int, address: str | None = None, *, cpus_per_worker: float = 1,
                 memory_per_worker: int = 2 * 2**30, startup_timeout: float = 300,
                 ray_settings: RaySettings | None = None,
                 dask_settings: DaskSettings | None = None, observe_faults: bool = False,
                 connect_timeout: float | None = None, dashboard: bool = False):
        from bench.spec import DaskSettings, RaySettings

        self.workers = workers
        self.address = address
        self.cpus_per_worker = cpus_per_worker
        self.memory_per_worker = memory_per_worker
        self.startup_timeout = startup_timeout
        self.ray_settings = ray_settings or RaySettings()
        self.dask_settings = dask_settings or DaskSettings()
        # Faulted benchmarks: start what observing faults needs (Ray's dashboard/state API).
        self.observe_faults = observe_faults
        # Start the framework's dashboard even where nothing reads it (a run recording the
        # frameworks' artefacts: the user may watch it). Dask's scheduler always serves one.
        self.dashboard = dashboard
        # Set during a faulted run triggered by completed tasks: called once per task done.
        self.on_task_done: Callable[[], None] | None = None
        self.started_cluster = False
        self.startup_seconds: float | None = None
        self.ready_at: float | None = None  # wall-clock (epoch) time N workers were registered
        # How long to keep trying to reach a cluster we connect to. A runner pod (the runner
        # command passes ``connect_timeout``, from the trial's startupTimeoutSeconds): its
        # cluster may still be starting, e.g. a DaskCluster is Running before its scheduler
        # pod exists. Anyone else who gives an address: a cluster that should be up, so a
        # wrong address fails within 2 minutes, not after timeoutSeconds.
        self.connect_timeout = min(startup_timeout, 120.0)
        if address and connect_timeout is not None:
            self.startup_timeout = self.connect_timeout = connect_timeout
        self.tasks = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._workdir: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> float:
        """Start or connect, wait for every worker; returns the start-up seconds.

        The one definition of a ready cluster, for every framework, locally and on
        Kubernetes: N workers registered with the head/scheduler and reachable from here.
        ``startup_seconds`` runs from this call until then (``ready_at``: the wall-clock time
        it was reached), and ``startup_timeout`` bounds the whole of it."""
        t0 = time.perf_counter()
        try:
            if self.address:
                self._connect(self.address)
            else:
                self.started_cluster = True
                self._start_local()
            self._wait_for_workers(max(1.0, self.startup_timeout - (time.perf_counter() - t0)))
        except lifecycle.Interrupted:
            self.kill()
            raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        self.ready_at = time.time()
        return self.startup_seconds

    @abstractmethod
    def _connect(self, address: str) -> None: ...

    @abstractmethod
    def _start_local(self) -> None: ...

    @abstractmethod
    def _wait_for_workers(self, timeout: float) -> None: ...

    def stop(self) -> None:
        self._disconnect()
        self._stop_processes()

    def kill(self) -> None:
        """Stop at once (an interrupted run): SIGKILL every process tree we started, no
        goodbyes to the cluster (the process is about to exit)."""
        self._stop_processes(grace=0)

    def _disconnect(self) -> None:  # noqa: B027  (a hook: engines with a client override it)
        """Close the driver's connection to the cluster (nothing to close by default)."""

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the workload vocabulary -----------------------------------------------------------
    @abstractmethod
    def put(self, obj: Any) -> Any: ...

    def release(self, handle: Any) -> None:  # noqa: B027  (optional: a no-op by default)
        """Drop a handle returned by ``put``."""

    @abstractmethod
    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]: ...

    @abstractmethod
    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]: ...

    @abstractmethod
    def joblib(self) -> AbstractContextManager[Any]: ...

    def dask_context(self) -> AbstractContextManager[Any]:
        raise NotImplementedError(f"{self.framework} has no Dask scheduler")

    def work_context(self) -> AbstractContextManager[Any]:
        """Entered by the harness in the thread that runs the workload.

        Thread-pool limits (OpenMP's thread count among them) are per calling thread, so they
        must be set in the thread that does the work, not where the engine was started.
        """
        return nullcontext()

    @property
    def parallelism(self) -> int:
        """How many tasks can run at once: the natural number of chunks to split work into."""
        return max(1, round(self.workers * max(1, self.cpus_per_worker)))

    # -- measurement -----------------------------------------------------------------------
    @abstractmethod
    def start_sampling(self, interval: float) -> None: ...

    @abstractmethod
    def stop_sampling(self) -> list[dict[str, Any]]: ...

    def dashboards(self) -> dict[str, str]:
        """The running cluster's dashboards, framework name → URL (none by default)."""
        return {}

    def artifacts(self, folder: str) -> AbstractContextManager[dict[str, str]]:
        """Records the framework's own account of what runs inside the block into files
        under ``folder`` (which exists); the dict it yields is filled on leaving with what
        was written, ``record["artifacts"]`` key → path. Nothing by default."""
        return nullcontext({})

    def describe(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "workers": self.workers,
            "address": self.address,
            "started_cluster": self.started_cluster,
            "cpus_per_worker": self.cpus_per_worker,
            "memory_per_worker": self.memory_per_worker,
            "settings": self.settings(),
            "startup_seconds": self.startup_seconds,
            "ready_at": self.ready_at,
        }

    def settings(self) -> dict[str, Any]:
        """The fault-tolerance settings in effect (recorded with every result)."""
        return {}

    # -- fault injection -------------------------------------------------------------------
    def worker_processes(self) -> list[psutil.Process]:
        """The top-level process of each worker this engine started (empty when connected)."""
        return []

    def worker_names(self) -> list[str]:
        """What the framework calls each process of ``worker_processes()``, in that order."""
        return [str(p.pid) for p in self.worker_processes()]

    def fault_victims(self) -> list[Victim]:
        """Workers and the head this engine can kill.

        Clusters the engine started: their processes (SIGKILL of the whole process tree).
        Connected clusters: what ``external_victims`` finds (the runner command injects it,
        e.g. the trial's pods inside Kubernetes).  Anything else: none, and fault injection
        reports itself as not applicable.
        """
        if not self.started_cluster:
            return self.external_victims() if self.external_victims is not None else []
        out = [Victim("worker", name, _killer(p))
               for p, name in zip(self.worker_processes(), self.worker_names(), strict=False)]
        if self._procs:
            with suppress(psutil.Error):
                out.append(Victim("head", "head", _killer(psutil.Process(self._procs[0].pid))))
        return out

    def watch_faults(self) -> FaultWatch:
        """Start observing the cluster's reaction to faults (before the faulted run)."""
        return FaultWatch()

    def replacer(self) -> str | None:
        """Who brings a killed worker back, if anyone: inside Kubernetes the controller that
        owns its pod (KubeRay's worker group, the Dask worker's Deployment) makes a new pod;
        locally only a Dask nanny restarts a worker (a local Ray node stays dead). The fault
        record then says whether and when the replacement arrived."""
        if not self.started_cluster:
            return self._k8s_replacer if self.external_victims is not None else None
        return None

    _k8s_replacer: str | None = None
    """What replaces this framework's worker pods on Kubernetes."""

    external_victims: VictimSource | None = None
    """The victims of a connected cluster, injected by the runner command (None: there is
    nothing the engine may kill there)."""

    counts_tasks = False
    """Whether ``map`` reports each finished task to ``on_task_done`` (what ``faults.
    afterTasksFraction`` needs)."""

    # -- helpers for subclasses that start processes ----------------------------------------
    def _workdir_path(self, prefix: str) -> str:
        if self._workdir is None:
            # Short path: Ray puts unix sockets under it (107-byte limit).
            self._workdir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        return self._workdir

    def _spawn(self, args: list[str], env: dict[str, str | None] | None = None,
               log: str | None = None) -> subprocess.Popen[bytes]:
        """Start one cluster process in a session of its own, carrying the run's marker
        (:mod:`bench.lifecycle`). ``env`` overrides the inherited environment; a ``None``
        value removes that variable."""
        full_env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = v
        full_env.update(lifecycle.spawn_env())
        # The child keeps its own copy of the log's descriptor; ours closes on leaving.
        with open(log, "ab") if log else nullcontext(subprocess.DEVNULL) as out:
            try:
                p = subprocess.Popen(args, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            except FileNotFoundError:
                raise RunError(f"cannot start {args[0]!r}: command not found") from None
        self._procs.append(p)
        return p

    def _stop_processes(self, grace: float = 3.0) -> None:
        """Terminate what we started (and all of its descendants), workers before heads."""
        if not self._procs:
            self._cleanup_workdir()
            return
        for group in (self._procs[1:], self._procs[:1]):  # workers first, then head/scheduler
            tree: list[psutil.Process] = []
            for p in group:
                try:
                    root = psutil.Process(p.pid)
                    tree += [root, *root.children(recursive=True)]
                except psutil.Error:
                    pass

            def send(sig: int, group: list[subprocess.Popen[bytes]] = group) -> None:
                for p in group:
                    _signal_group(p, sig)

            lifecycle.terminate(tree, grace, send=send)
            for p in group:
                _signal_group(p, signal.SIGKILL)
                with suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        self._procs = []
        self._cleanup_workdir()

    def _cleanup_workdir(self) -> None:
        if self._workdir and not os.environ.get("TESTBED_KEEP_LOGS"):
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def _check_alive(self, what: str) -> None:
        for p in self._procs:
            if p.poll() is not None:
                log = self._log_tail()
                raise RunError(f"{what} exited with status {p.returncode} during start-up{log}")

    def _log_tail(self) -> str:
        if not self._workdir:
            return ""
        tails = []
        for name in sorted(os.listdir(self._workdir)):
            if name.endswith(".log"):
                with open(os.path.join(self._workdir, name), errors="replace") as f:
                    lines = [ln.rstrip() for ln in f.readlines()[-3:] if ln.strip()]
                if lines:
                    tails.append(f"  {name}: " + " | ".join(lines))
        return (":\n" + "\n".join(tails)) if tails else ""


def _killer(proc: psutil.Process) -> Callable[[], None]:
    def kill() -> None:
        tree = [proc, *proc.children(recursive=True)]
        for c in tree:
            with suppress(psutil.NoSuchProcess):
                c.kill()

    return kill


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               poll: float = 0.1, check: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check:
            check()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise RunError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
