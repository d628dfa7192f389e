"""Dask-on-Ray: Dask graphs executed by Ray's scheduler (``ray.util.dask.ray_dask_get``).

The cluster is a Ray cluster (same start-up as :class:`RayEngine`); every ``map`` and every Dask
collection becomes a Dask graph whose tasks Ray runs.  Shared data lives in Ray's object store:
``ObjectRef`` arguments inside the graph are resolved by Ray.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .ray_engine import RayEngine


class DaskOnRayEngine(RayEngine):
    framework = "dask-on-ray"
    counts_tasks = False  # Dask graphs run by Ray's scheduler: no per-task handle here

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]:
        from dask.base import compute
        from dask.delayed import delayed
        from ray.util.dask import ray_dask_get

        self.tasks += len(items)
        parts = [delayed(fn, pure=False)(item, *shared) for item in items]
        return list(compute(*parts, scheduler=ray_dask_get))  # type: ignore[no-untyped-call]

    def tiny_tasks(self, fn: Callable[..., Any], arg: Any, count: int, sync: bool) -> list[Any]:
        from dask.base import compute
        from dask.delayed import delayed
        from ray.util.dask import ray_dask_get

        self.tasks += count
        if sync:
            return [delayed(fn, pure=False)(arg).compute(scheduler=ray_dask_get)
                    for _ in range(count)]
        parts = [delayed(fn, pure=False)(arg) for _ in range(count)]
        # dask.base.compute is unannotated
        return list(compute(*parts, scheduler=ray_dask_get))  # type: ignore[no-untyped-call]

    def dask_context(self) -> AbstractContextManager[Any]:
        import dask
        from ray.util.dask import ray_dask_get

        # Distributed's p2p shuffle needs a distributed scheduler: shuffle with tasks here.
        return dask.config.set({"scheduler": ray_dask_get, "dataframe.shuffle.method": "tasks"})
