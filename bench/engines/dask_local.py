"""Dask's single-machine schedulers as baselines: ``dask-threads``, ``dask-processes`` and
``dask-synchronous``.

No cluster: the Dask graph a workload builds runs in this process, under
``dask.config.set(scheduler=...)`` (the first thing Dask's own documentation suggests
trying). ``workers`` is the size of the pool: threads (``dask-threads``) or processes
(``dask-processes``); the synchronous scheduler runs every task in the calling thread.

The pool is made when the engine starts, so its start-up (spawning the processes) is timed
as start-up, not as the first run: dask's ``multiprocessing.get`` otherwise makes and shuts
down a ``ProcessPoolExecutor`` on every ``compute`` (dask/multiprocessing.py, ``get``: a
``pool`` from the configuration is used as it is). Processes are started with dask's own
context (``multiprocessing.context``, spawn by default) and initializer, and with a fixed
``PYTHONHASHSEED`` as dask sets it, so string hashing (a groupby's or a shuffle's
partitioning) agrees between the processes.

Only workloads built on Dask collections run here (``WorkloadInfo.dask_graphs`` in
``bench.params``); the engine vocabulary's ``put``/``map``/``joblib`` fail with one line.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from typing import Any, NoReturn

import psutil

from bench.errors import RunError
from bench.frameworks import dask_scheduler
from bench.measure import TreeSampler
from bench.params import WORKLOADS

from .local import InProcessSampling


def _noop(i: int) -> int:
    return i


class DaskLocalEngine(InProcessSampling):
    def __init__(self, workers: int = 1, address: str | None = None, *,
                 framework: str = "dask-threads", **kw: Any):
        scheduler = dask_scheduler(framework)
        if scheduler is None:
            raise ValueError(f"{framework!r} is not one of Dask's single-machine schedulers")
        super().__init__(workers, None, **kw)
        self.framework = framework
        self.scheduler = scheduler
        self._pool: Executor | None = None
        self._sampler: TreeSampler | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _connect(self, address: str) -> None:  # pragma: no cover - never called
        raise AssertionError(f"{self.framework} has no cluster to connect to")

    def _start_local(self) -> None:
        self.started_cluster = False  # nothing to connect to, nothing fault injection may kill
        if self.scheduler == "threads":
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dask-threads")
        elif self.scheduler == "processes":
            from functools import partial

            import dask
            from dask.multiprocessing import get_context, initialize_worker_process

            # What dask.multiprocessing.get does before it makes its own pool.
            if os.environ.get("PYTHONHASHSEED") in (None, "0"):
                os.environ["PYTHONHASHSEED"] = "6640"
            init = partial(initialize_worker_process,
                           user_initializer=dask.config.get("multiprocessing.initializer",
                                                            None))
            context = get_context()  # type: ignore[no-untyped-call]  # dask: unannotated
            pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=init)
            self._pool = pool
            # Start every process now (the executor spawns them on demand).
            list(pool.map(_noop, range(self.workers * 4)))

    def _wait_for_workers(self, timeout: float) -> None:
        return None

    def stop(self) -> None:
        self._shutdown(wait=True)

    def kill(self) -> None:
        self._shutdown(wait=False)

    def _shutdown(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        children = self._pool_processes(pool)
        pool.shutdown(wait=wait, cancel_futures=True)
        if not wait:
            for p in children:
                with suppress(psutil.Error):
                    p.kill()

    @staticmethod
    def _pool_processes(pool: Executor) -> list[psutil.Process]:
        procs = getattr(pool, "_processes", None) or {}
        out = []
        for pid in list(procs):
            with suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out

    @property
    def parallelism(self) -> int:
        return 1 if self.scheduler == "synchronous" else self.workers

    # -- the workload vocabulary: Dask graphs only -----------------------------------------
    def dask_context(self) -> AbstractContextManager[Any]:
        import dask

        config: dict[str, Any] = {"scheduler": self.scheduler,
                                  # No distributed scheduler: shuffle with tasks, in memory.
                                  "dataframe.shuffle.method": "tasks"}
        if self._pool is not None:
            config.update(pool=self._pool, num_workers=self.workers)
        return dask.config.set(config)

    def _graphs_only(self, what: str) -> NoReturn:
        names = ", ".join(n for n, w in WORKLOADS.items() if w.dask_graphs)
        raise RunError(f"{self.framework} runs only Dask graphs (the workloads {names}); this "
                       f"workload uses the engine's {what}")

    def put(self, obj: Any) -> Any:
        self._graphs_only("put")

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]:
        self._graphs_only("map")

    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]:
        self._graphs_only("tasks")

    def joblib(self) -> AbstractContextManager[Any]:
        self._graphs_only("joblib backend")


    def settings(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler}
