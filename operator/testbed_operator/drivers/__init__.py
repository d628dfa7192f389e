"""One driver per framework behind :class:`.base.Driver`: KubeRay (:mod:`.ray`) and the Dask
operator with a batch Job runner (:mod:`.dask`)."""
from __future__ import annotations

from bench.frameworks import cluster_kind

from .base import (
    CONFIGMAP,
    JOB,
    NETWORKPOLICY,
    Driver,
    Kind,
    ObjRef,
    Readiness,
    TrialContext,
    TrialOutcome,
    TrialTimedOut,
    label,
)
from .dask import DASKCLUSTER, DaskDriver, job_finished
from .ray import RAYCLUSTER, RAYJOB, RayDriver

__all__ = ["CONFIGMAP", "DASKCLUSTER", "JOB", "LABELLED_KINDS", "NETWORKPOLICY", "RAYCLUSTER",
           "RAYJOB", "Driver", "Kind", "ObjRef", "Readiness", "TrialContext",
           "TrialOutcome", "TrialTimedOut", "driver_for", "job_finished", "label"]

# What a Benchmark's children may be, deleted by label with the Benchmark (NetworkPolicies
# too, when the operator makes them).
LABELLED_KINDS: list[Kind] = [RAYJOB, RAYCLUSTER, JOB, DASKCLUSTER, CONFIGMAP]


def driver_for(framework: str) -> Driver:
    """KubeRay's driver for frameworks that run on a Ray cluster, else the Dask operator's."""
    return RayDriver() if cluster_kind(framework) == "ray" else DaskDriver()
