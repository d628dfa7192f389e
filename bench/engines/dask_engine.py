"""Dask distributed: futures, ``scatter``, collections and distributed's joblib backend.

Local clusters mirror the Dask operator's pods: one ``dask scheduler`` process and N
``dask worker --nthreads 1`` processes (each under its nanny), all on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, Sequence

import psutil

from ..errors import RunError
from ..measure import worker_start_sampling, worker_stop_sampling
from .base import Engine, wait_until


def _dask_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "dask")


# Every process we start: one BLAS/OpenMP thread (the worker itself has one task thread).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


class DaskEngine(Engine):
    framework = "dask"

    def __init__(self, workers: int, address: str | None = None, **kw: Any):
        super().__init__(workers, address, **kw)
        self.client = None

    def _start_local(self) -> None:
        work = self._workdir_path("tb-dask-")
        sched_file = os.path.join(work, "scheduler.json")
        self._spawn([_dask_bin(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sched_file,
                     "--no-show"],
                    env=THREAD_ENV, log=os.path.join(work, "scheduler.log"))
        wait_until(lambda: _read_address(sched_file) is not None, self.startup_timeout,
                   "the Dask scheduler", check=lambda: self._check_alive("dask scheduler"))
        address = _read_address(sched_file)
        nthreads = max(1, int(self.cpus_per_worker))
        for i in range(self.workers):
            self._spawn([_dask_bin(), "worker", address, "--nthreads", str(nthreads),
                         "--nworkers", "1", "--memory-limit", str(self.memory_per_worker),
                         "--local-directory", os.path.join(work, f"w{i}"), "--name", f"w{i}",
                         "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                         "--death-timeout", "60"],
                        env=THREAD_ENV, log=os.path.join(work, f"worker{i}.log"))
        self._connect(address)

    def _connect(self, address: str) -> None:
        from distributed import Client

        if "://" not in address:
            address = f"tcp://{address}"
        try:
            self.client = Client(address, timeout=min(30, self.startup_timeout), set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise RunError(f"cannot connect to the Dask scheduler at {address!r}: {type(e).__name__}: {e}") from None
        self.address = self.address or None
        self._scheduler_address = address

    def _wait_for_workers(self, timeout: float) -> None:
        check = (lambda: self._check_alive("a dask process")) if self.started_cluster else None

        def ready() -> bool:
            return len(self.client.scheduler_info(n_workers=-1)["workers"]) >= self.workers

        wait_until(ready, timeout, f"{self.workers} Dask worker(s) to connect", poll=0.1, check=check)
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(w["nthreads"] for w in info.values())
        self.cpus_per_worker = threads / max(1, len(info))

    def _disconnect(self) -> None:
        if self.client is not None:
            try:
                self.client.close(timeout=10)
            except Exception:
                pass
            self.client = None

    # -- vocabulary ------------------------------------------------------------------------
    def put(self, obj: Any) -> Any:
        # hash=False: the hashed-key path loses data when re-scattered (distributed 2026.8.0).
        return self.client.scatter(obj, broadcast=True, hash=False)

    def release(self, handle: Any) -> None:
        try:
            handle.release()
        except Exception:
            pass

    def map(self, fn: Callable, items: Sequence[Any], *shared: Any) -> list[Any]:
        n = len(items)
        self.tasks += n
        futures = self.client.map(fn, list(items), *[[s] * n for s in shared],
                                  pure=False)
        return self.client.gather(futures)

    def tiny_tasks(self, fn: Callable, arg: Any, count: int, sync: bool) -> list[Any]:
        self.tasks += count
        if sync:
            return [self.client.submit(fn, arg, pure=False).result() for _ in range(count)]
        return self.client.gather(self.client.map(fn, [arg] * count, pure=False))

    @contextmanager
    def _joblib(self) -> Iterator[None]:
        from joblib import parallel_config

        with parallel_config(backend="dask", client=self.client, n_jobs=self.parallelism):
            yield

    def joblib(self) -> AbstractContextManager:
        return self._joblib()

    def dask_context(self) -> AbstractContextManager:
        return self.client.as_current()

    # -- measurement -----------------------------------------------------------------------
    def start_sampling(self, interval: float) -> None:
        self.client.run(worker_start_sampling, interval)

    def stop_sampling(self) -> list[dict[str, Any]]:
        out = []
        for addr, r in sorted(self.client.run(worker_stop_sampling).items()):
            r["id"] = addr
            out.append(r)
        return out

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes (children of each nanny), not the nannies themselves."""
        procs = []
        for p in self._procs[1:]:
            try:
                kids = psutil.Process(p.pid).children(recursive=True)
                procs.append(kids[-1] if kids else psutil.Process(p.pid))
            except psutil.Error:
                pass
        return procs


def _read_address(path: str) -> str | None:
    try:
        with open(path) as f:
            return json.load(f)["address"]
    except (OSError, ValueError, KeyError):
        return None
