"""Engines: one per bench.frameworks.Framework, each imported on first use."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from bench.frameworks import Framework, dask_scheduler, in_process, is_framework

from .base import Engine

_ENGINES: dict[Framework, tuple[str, str]] = {
    "local": ("local", "LocalEngine"),
    "ray": ("ray_engine", "RayEngine"),
    "dask": ("dask_engine", "DaskEngine"),
    "dask-on-ray": ("dask_on_ray", "DaskOnRayEngine"),
    "dask-threads": ("dask_local", "DaskLocalEngine"),
    "dask-processes": ("dask_local", "DaskLocalEngine"),
    "dask-synchronous": ("dask_local", "DaskLocalEngine"),
}


def make_engine(framework: str, workers: int, address: str | None = None, **kw: Any) -> Engine:
    """The engine of ``framework`` with ``workers`` workers; ``address``: an existing cluster
    to connect to (the in-process frameworks have none)."""
    if not is_framework(framework):
        raise ValueError(f"unknown framework {framework!r}")
    module, name = _ENGINES[framework]
    cls = getattr(import_module(f"{__name__}.{module}"), name)
    if dask_scheduler(framework) is not None:
        kw["framework"] = framework
    engine: Engine = cls(workers, **kw) if in_process(framework) else cls(workers, address, **kw)
    return engine


__all__ = ["Engine", "make_engine"]
