"""The frameworks a trial runs on: one type, one list, and what each one can do.

Everything that needs to tell one framework from another asks a capability here
(:func:`is_baseline`) instead of comparing with a name, so a new framework is added in one
place.
"""
from __future__ import annotations

from typing import Literal, TypeGuard, get_args

Framework = Literal["local", "ray", "dask", "dask-on-ray", "dask-threads", "dask-processes",
                    "dask-synchronous"]
"""A framework's name, as written in a spec, a record and the CRD."""

FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)
"""Every framework, in display and sort order (the baseline first)."""

BASELINE: Framework = "local"
"""The single-process baseline: no cluster, its "workers" are threads."""


def is_framework(name: object) -> TypeGuard[Framework]:
    """Whether ``name`` is one of :data:`FRAMEWORKS`."""
    return name in FRAMEWORKS


def is_baseline(framework: str) -> bool:
    """The single-process baseline: runs in the calling process (no cluster, no address, no
    workers to kill, a run that cannot be interrupted); its worker count is a thread count.
    Workloads run their canonical single-process implementation on it, and every quality
    figure and every ``vs local`` ratio is measured against it."""
    return framework == BASELINE


DASK_SCHEDULERS: dict[str, str] = {"dask-threads": "threads", "dask-processes": "processes",
                                   "dask-synchronous": "synchronous"}
"""Dask's single-machine schedulers, by framework: the Dask graph a workload builds runs in
the calling process (``dask.config.set(scheduler=...)``): on a thread pool, a process pool,
or in the calling thread. Baselines like ``local``, but for Dask graphs only."""


def dask_scheduler(framework: str) -> str | None:
    """Dask's single-machine scheduler ``framework`` runs graphs with, if it is one."""
    return DASK_SCHEDULERS.get(framework)


def in_process(framework: str) -> bool:
    """No cluster: runs in the calling process (no address to connect to, no workers to kill,
    a run that cannot be interrupted): the ``local`` baseline and Dask's single-machine
    schedulers (whose process pool, for ``dask-processes``, lives and dies with the run)."""
    return is_baseline(framework) or dask_scheduler(framework) is not None


def trial_workers(framework: str, workers: list[int]) -> list[int]:
    """The worker counts a named in-process framework runs with: Dask's synchronous scheduler
    has one thread whatever the count, so it runs once, with 1."""
    return [1] if framework == "dask-synchronous" else workers


ClusterKind = Literal["ray", "dask"]
"""The kind of cluster a framework runs on (on Kubernetes: KubeRay's or the Dask operator's)."""


def cluster_kind(framework: str) -> ClusterKind | None:
    """Which cluster ``framework`` runs on: Dask-on-Ray runs Dask graphs on a Ray cluster; the
    in-process frameworks (the baseline, Dask's single-machine schedulers) have none."""
    if framework in ("ray", "dask-on-ray"):
        return "ray"
    return "dask" if framework == "dask" else None


def framework_rank(framework: str) -> int:
    """Position in :data:`FRAMEWORKS`; unknown names after every known one."""
    return FRAMEWORKS.index(framework) if is_framework(framework) else len(FRAMEWORKS)
