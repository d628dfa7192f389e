"""The single-process baseline: plain Python / scikit-learn / torch with a stated thread count.

``workers`` is the number of threads: BLAS/OpenMP pools are limited to it (threadpoolctl), torch
uses it, and ``map`` runs on a thread pool of that size.  Workloads run their canonical
single-process implementation on this engine; that is the figure every framework is compared with.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Any

from bench.frameworks import BASELINE
from bench.measure import TreeSampler

from .base import Engine


class InProcessSampling(Engine):
    """Sampling for the engines that run in this process (the baseline, Dask's single-machine
    schedulers): this process and its pool's processes, as one worker named after the
    framework."""

    _sampler: TreeSampler | None = None

    def start_sampling(self, interval: float) -> None:
        self._sampler = TreeSampler(interval=interval, include_root=True)
        self._sampler.start()

    def stop_sampling(self) -> list[dict[str, Any]]:
        if self._sampler is None:
            return []
        out = self._sampler.stop()
        self._sampler = None
        out["id"] = self.framework
        return [out]


class LocalEngine(InProcessSampling):
    framework = BASELINE

    def __init__(self, workers: int = 1, address: str | None = None, **kw: Any):
        super().__init__(workers, None, **kw)
        self.threads = workers
        self._pool: ThreadPoolExecutor | None = None
        self._sampler: TreeSampler | None = None
        self._torch: ModuleType | None = None  # torch, when a torch workload imported it
        self._torch_threads = 0

    def _connect(self, address: str) -> None:  # pragma: no cover - never called
        raise AssertionError("the local engine has no cluster to connect to")

    def _start_local(self) -> None:
        import sys

        # No thread-pool limits here: they are set in the thread that does the work
        # (work_context). Limiting OpenMP in this thread as well makes a 2-thread scikit-learn
        # KNN 2.5-3x slower than one thread (measured: nested per-thread OpenMP settings).
        # torch is imported by the harness before any timing when a torch workload runs.
        self._torch = sys.modules.get("torch")
        if self._torch is not None:
            self._torch_threads = self._torch.get_num_threads()
            self._torch.set_num_threads(self.threads)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.started_cluster = False

    def _wait_for_workers(self, timeout: float) -> None:
        return None

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._torch is not None:
            self._torch.set_num_threads(self._torch_threads)
            self._torch = None

    @property
    def parallelism(self) -> int:
        return self.threads

    def work_context(self) -> AbstractContextManager[Any]:
        # threadpoolctl ships no type information
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        limits: AbstractContextManager[Any] = threadpool_limits(limits=self.threads)
        return limits

    def put(self, obj: Any) -> Any:
        return obj

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]:
        self.tasks += len(items)
        if self._pool is None:
            return [fn(item, *shared) for item in items]
        return list(self._pool.map(lambda item: fn(item, *shared), items))

    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]:
        # Plain Python: the baseline that shows what a "task" costs without a framework.
        return [fn(arg) for _ in range(count)]

    @contextmanager
    def _joblib(self) -> Iterator[None]:
        from joblib import parallel_config  # type: ignore[import-untyped]  # no stubs

        with parallel_config(backend="threading" if self.threads > 1 else "sequential",
                             n_jobs=self.threads):
            yield

    def joblib(self) -> AbstractContextManager[None]:
        return self._joblib()

