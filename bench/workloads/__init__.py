"""Workloads: one module per workload, imported on first use (torch only when needed); the
registry that names them is ``bench.params.WORKLOADS``."""
from __future__ import annotations

from importlib import import_module

from bench.params import WORKLOADS

from .base import Outcome, Workload


def get_workload(name: str) -> Workload:
    """A fresh instance of the workload ``name`` (its module imported now)."""
    module, cls = WORKLOADS[name].impl.split(":")
    workload: Workload = getattr(import_module(f"{__name__}.{module}"), cls)()
    return workload


__all__ = ["Outcome", "Workload", "get_workload"]
