"""Dask distributed: futures, ``scatter``, collections and distributed's joblib backend.

Local clusters mirror the Dask operator's pods: one ``dask scheduler`` process and N
``dask worker --nthreads 1`` processes (each under its nanny), all on 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psutil
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

from bench.errors import RunError, error_summary
from bench.measure import worker_start_sampling, worker_stop_sampling

from .base import Engine, FaultWatch, _replacement, wait_until
from .retry import retry_until


def _dask_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "dask")


# Every process we start: one BLAS/OpenMP thread (the worker itself has one task thread).
THREAD_ENV: dict[str, str | None] = {
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


class DaskEngine(Engine):
    framework = "dask"
    counts_tasks = True

    def __init__(self, workers: int, address: str | None = None, **kw: Any):
        super().__init__(workers, address, **kw)
        self.client: Client | None = None
        self._local_scheduler = ""
        self._worker_names: list[str] = []

    def _start_local(self) -> None:
        work = self._workdir_path("tb-dask-")
        sched_file = os.path.join(work, "scheduler.json")
        self._spawn([_dask_bin(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sched_file,
                     "--no-show"],
                    env={**THREAD_ENV, **self.dask_settings.scheduler_env()},
                    log=os.path.join(work, "scheduler.log"))
        wait_until(lambda: _read_address(sched_file) is not None, self.startup_timeout,
                   "the Dask scheduler", check=lambda: self._check_alive("dask scheduler"))
        address = _read_address(sched_file) or ""  # there: waited for above
        self._local_scheduler = address
        self._worker_names = []  # a restarted cluster's workers are new ones
        for i in range(self.workers):
            self.add_worker(f"w{i}")
        self._connect(address)

    def add_worker(self, name: str) -> None:
        """Start one more worker, named ``name``, for the scheduler this engine started (a
        replacement may reuse a dead worker's name, as a Deployment's new pod does)."""
        i = len(self._procs) - 1
        work = self._workdir_path("tb-dask-")
        self._worker_names.append(name)
        self._spawn([_dask_bin(), "worker", self._local_scheduler, "--nthreads",
                     str(max(1, int(self.cpus_per_worker))), "--nworkers", "1",
                     "--memory-limit", str(self.memory_per_worker),
                     "--local-directory", os.path.join(work, f"w{i}"), "--name", name,
                     "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                     "--death-timeout", "60",
                     "--nanny" if self.dask_settings.nanny else "--no-nanny"],
                    env=THREAD_ENV, log=os.path.join(work, f"worker{i}.log"))

    def _connect(self, address: str) -> None:
        if "://" not in address:
            address = f"tcp://{address}"
        # The scheduler may not exist yet (dask-kubernetes marks a DaskCluster Running as soon
        # as its Service exists, before any pod): keep trying for the whole start-up timeout.
        try:
            def attempt(left: float) -> Client:
                # (distributed's Client is unannotated: no-untyped-call)
                return Client(address, timeout=max(1.0, min(30.0, left)),  # type: ignore[no-untyped-call]
                              set_as_default=False)

            self.client = retry_until(attempt, self.connect_timeout,
                                      retry_on=(OSError, TimeoutError))
        except (OSError, TimeoutError) as e:
            raise RunError(f"cannot connect to the Dask scheduler at {address!r} within "
                           f"{self.connect_timeout:g} s: {type(e).__name__}: {e}") from None
        self.address = self.address or None
        self._scheduler_address = address

    def _wait_for_workers(self, timeout: float) -> None:
        check = (lambda: self._check_alive("a dask process")) if self.started_cluster else None

        def ready() -> bool:
            return len(self._client.scheduler_info(n_workers=-1)["workers"]) >= self.workers

        wait_until(ready, timeout, f"{self.workers} Dask worker(s) to connect", poll=0.1,
                   check=check)
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(w["nthreads"] for w in info.values())
        self.cpus_per_worker = threads / max(1, len(info))

    def _disconnect(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)  # type: ignore[no-untyped-call]  # distributed
            self.client = None

    @property
    def _client(self) -> Client:
        """The connected client (every call below runs between start and stop)."""
        if self.client is None:
            raise RunError("the Dask engine is not connected")
        return self.client

    # -- vocabulary ------------------------------------------------------------------------
    def put(self, obj: Any) -> Any:
        # hash=False: the hashed-key path loses data when re-scattered (distributed 2026.8.0).
        return self._client.scatter(  # type: ignore[no-untyped-call]  # distributed
            obj, broadcast=True, hash=False)

    def release(self, handle: Any) -> None:
        with contextlib.suppress(Exception):
            handle.release()

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]:
        n = len(items)
        self.tasks += n
        futures = self._client.map(fn, list(items), *[[s] * n for s in shared],
                                  pure=False)
        hook = self.on_task_done
        if hook is not None:
            for f in futures:
                f.add_done_callback(lambda _f: hook())  # type: ignore[no-untyped-call]
        return list(self._client.gather(futures))  # type: ignore[no-untyped-call]  # distributed

    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]:
        self.tasks += count
        if sync:
            return [self._client.submit(fn, arg, pure=False).result() for _ in range(count)]
        futures = self._client.map(fn, [arg] * count, pure=False)
        return list(self._client.gather(futures))  # type: ignore[no-untyped-call]  # distributed

    @contextmanager
    def _joblib(self) -> Iterator[None]:
        from joblib import parallel_config  # type: ignore[import-untyped]  # no stubs

        with parallel_config(backend="dask", client=self._client, n_jobs=self.parallelism):
            yield

    def joblib(self) -> AbstractContextManager[Any]:
        return self._joblib()

    def dask_context(self) -> AbstractContextManager[Any]:
        return self._client.as_current()

    # -- measurement -----------------------------------------------------------------------
    def start_sampling(self, interval: float) -> None:
        self._client.run(worker_start_sampling, interval)

    def stop_sampling(self) -> list[dict[str, Any]]:
        out = []
        for addr, r in sorted(self._client.run(worker_stop_sampling).items()):
            r["id"] = addr
            out.append(r)
        return out

    def dashboards(self) -> dict[str, str]:
        link = self.client.dashboard_link if self.client is not None else None
        return {"dask": str(link)} if link else {}

    @contextmanager
    def _artifacts(self, folder: str) -> Iterator[dict[str, str]]:
        # performance_report reads the default client (distributed/client.py,
        # performance_report.__enter__: get_client()): make ours current around it.
        from distributed import performance_report

        out: dict[str, str] = {}
        path = os.path.join(folder, "dask-performance-report.html")
        with self._client.as_current(), performance_report(  # type: ignore[no-untyped-call]
                filename=path):  # (distributed leaves it unannotated)
            yield out
        out["dask_performance_report"] = path

    def artifacts(self, folder: str) -> AbstractContextManager[dict[str, str]]:
        return self._artifacts(folder)

    def settings(self) -> dict[str, Any]:
        return {"allowed_failures": self.dask_settings.allowed_failures,
                "nanny": self.dask_settings.nanny}

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes: the child of each nanny (which the nanny then restarts), or
        the worker itself when it runs without a nanny."""
        procs = []
        for p in self._procs[1:]:
            try:
                top = psutil.Process(p.pid)
                kids = top.children(recursive=True) if self.dask_settings.nanny else []
                procs.append(kids[-1] if kids else top)
            except psutil.Error:
                pass
        return procs

    def worker_names(self) -> list[str]:
        return list(self._worker_names)

    _k8s_replacer = "deployment"  # dask-kubernetes: one Deployment per worker

    def replacer(self) -> str | None:
        if self.started_cluster:
            return "nanny" if self.dask_settings.nanny else None
        return super().replacer()

    def watch_faults(self) -> FaultWatch:
        return DaskFaultWatch(self._client, self.replacer())


class FaultLedger(SchedulerPlugin):
    """A scheduler plugin recording worker removals and arrivals and every task transition
    they caused, so a faulted run reports what the scheduler really did."""

    name = "testbed-fault-ledger"

    def __init__(self) -> None:
        self.removed: list[dict[str, Any]] = []
        self.added: list[dict[str, Any]] = []
        self.processing: dict[str, int] = {}
        # Transitions a worker's removal causes, by stimulus id (the scheduler runs them
        # before it calls remove_worker, so they are matched up in report()).
        self.by_stimulus: dict[str, dict[str, int]] = {}
        self.names: dict[str, str] = {}  # worker address -> name (gone once it is removed)

    async def start(self, scheduler: Any) -> None:
        self.names = {addr: str(ws.name) for addr, ws in scheduler.workers.items()}

    def add_worker(self, scheduler: Any = None, worker: str = "") -> None:
        ws = scheduler.workers.get(worker) if scheduler is not None else None
        self.names[worker] = str(getattr(ws, "name", worker))
        self.added.append({"worker": worker, "name": self.names[worker], "time": time.time()})

    def remove_worker(self, scheduler: Any = None, worker: str = "", *,
                      stimulus_id: str = "", **kwargs: Any) -> None:
        self.removed.append({"worker": worker, "name": self.names.get(worker, worker),
                             "time": time.time(), "stimulus_id": stimulus_id})

    def transition(self, key: Any, start: str, finish: str, *args: Any,
                   stimulus_id: str = "", **kwargs: Any) -> None:
        if finish == "processing":
            k = str(key)
            self.processing[k] = self.processing.get(k, 0) + 1
        if (start, finish) in _LOSSES or finish == "erred":
            counts = self.by_stimulus.setdefault(stimulus_id, {})
            t = f"{start}->{finish}"
            counts[t] = counts.get(t, 0) + 1

    def report(self) -> dict[str, Any]:
        by_removal: dict[str, int] = {}
        for r in self.removed:
            for t, n in self.by_stimulus.get(r["stimulus_id"], {}).items():
                by_removal[t] = by_removal.get(t, 0) + n
        return {"removed": self.removed, "added": self.added,
                "recomputed": sum(n - 1 for n in self.processing.values() if n > 1),
                "by_removal": by_removal}


# A task running on, or whose result lived only on, a worker that is removed.
_LOSSES = {("processing", "released"), ("memory", "released"), ("memory", "waiting"),
           ("processing", "waiting")}


def _ledger_report(dask_scheduler: Any) -> dict[str, Any]:
    ledger: FaultLedger = dask_scheduler.plugins[FaultLedger.name]
    return ledger.report()


class DaskFaultWatch(FaultWatch):
    def __init__(self, client: Client, replacer: str | None):
        self.client = client
        self.replacer = replacer  # "nanny", "deployment" or None: see Engine.replacer
        client.register_plugin(FaultLedger(), name=FaultLedger.name)

    def report(self, kills: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
        killed = {k["name"] for k in kills if k["role"] == "worker" and "at_wall" in k}
        head_killed = any(k["role"] == "head" and "at_wall" in k for k in kills)
        if head_killed:
            return {"observed": False,
                    "reason": "the scheduler was killed: its record of the run is gone"}
        t_kill = min((k["at_wall"] for k in kills if "at_wall" in k), default=None)
        ledger: dict[str, Any] = {}

        def settled() -> bool:
            # The removals, and the replacements when something replaces workers (a nanny,
            # or a Deployment's new pod, which keeps the worker's name: DASK_WORKER_NAME).
            ledger.update(self.client.run_on_scheduler(  # type: ignore[no-untyped-call]
                _ledger_report))  # (distributed leaves it unannotated)
            return killed <= {r["name"] for r in ledger["removed"]} and (
                self.replacer is None or killed <= {a["name"] for a in ledger["added"]})

        try:
            wait_until(settled, timeout, "the scheduler to remove and replace the workers",
                       poll=0.2)
        except RunError:
            pass  # what is missing is reported below
        except Exception as e:
            return {"observed": False,
                    "reason": f"cannot read the scheduler's record: {error_summary(e)}"}
        led = ledger
        with contextlib.suppress(Exception):
            self.client.unregister_scheduler_plugin(FaultLedger.name)
        removals = [r for r in led["removed"] if r["name"] in killed]
        first: dict[str, float] = {}  # each killed worker's first comeback after the kill
        for a in led["added"]:
            if a["name"] in killed and (t_kill is None or a["time"] >= t_kill):
                first.setdefault(a["name"], a["time"])
        by = led["by_removal"]
        out: dict[str, Any] = {
            "observed": True,
            "workers_removed": len(removals),
            "detected_after_seconds": (min(r["time"] for r in removals) - t_kill
                                       if removals and t_kill is not None else None),
            "replaced_after_seconds": (min(first.values()) - t_kill
                                       if first and t_kill is not None else None),
            "replacement": _replacement(self.replacer, len(killed), list(first.values()),
                                        t_kill),
            "recomputed_tasks": led["recomputed"],
            "rescheduled_tasks": by.get("processing->released", 0),
            "lost_results": sum(n for t, n in by.items() if t.startswith("memory->")),
            "killed_worker_errors": sum(n for t, n in by.items() if t.endswith("->erred")),
            "transitions_by_removal": by,
        }
        undetected = killed - {r["name"] for r in removals}
        if undetected:
            out["undetected"] = sorted(undetected)
        return out


def _read_address(path: str) -> str | None:
    try:
        with open(path) as f:
            return str(json.load(f)["address"])
    except (OSError, ValueError, KeyError):
        return None
