"""Engines: local (single process), ray, dask, dask-on-ray."""
from __future__ import annotations

from typing import Any

from .base import Engine


def make_engine(framework: str, workers: int, address: str | None = None, **kw: Any) -> Engine:
    if framework == "local":
        from .local import LocalEngine

        return LocalEngine(workers, **kw)
    if framework == "ray":
        from .ray_engine import RayEngine

        return RayEngine(workers, address, **kw)
    if framework == "dask":
        from .dask_engine import DaskEngine

        return DaskEngine(workers, address, **kw)
    if framework == "dask-on-ray":
        from .dask_on_ray import DaskOnRayEngine

        return DaskOnRayEngine(workers, address, **kw)
    raise ValueError(f"unknown framework {framework!r}")


__all__ = ["Engine", "make_engine"]
