"""The frameworks a trial runs on: one type, one list, and what each one can do.

Everything that needs to tell one framework from another asks a capability here
(:func:`is_baseline`) instead of comparing with a name, so a new framework is added in one
place.
"""
from __future__ import annotations

from typing import Literal, TypeGuard, get_args

Framework = Literal["local", "ray", "dask", "dask-on-ray"]
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
    workers to kill, a run that cannot be interrupted); its worker count is a thread count."""
    return framework == BASELINE


ClusterKind = Literal["ray", "dask"]
"""The kind of cluster a framework runs on (on Kubernetes: KubeRay's or the Dask operator's)."""


def cluster_kind(framework: str) -> ClusterKind | None:
    """Which cluster ``framework`` runs on: Dask-on-Ray runs Dask graphs on a Ray cluster; the
    baseline has none."""
    if framework in ("ray", "dask-on-ray"):
        return "ray"
    return "dask" if framework == "dask" else None


def framework_rank(framework: str) -> int:
    """Position in :data:`FRAMEWORKS`; unknown names after every known one."""
    return FRAMEWORKS.index(framework) if is_framework(framework) else len(FRAMEWORKS)
