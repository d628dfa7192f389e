"""What a framework driver is: the small protocol the reconcile loop drives every trial through.

A driver knows one framework's objects and how to read them; it makes no API calls and writes
no status (the reconcile loop, :mod:`..reconcile`, does both, once per step):

* :meth:`Driver.manifests`: the objects a trial creates, the cluster first; the last one is
  the runner (for KubeRay the RayJob is both: its driver is the runner);
* :meth:`Driver.children`: what a trial leaves behind, in the order to delete it;
* :meth:`Driver.ready`: whether the cluster is ready (or can never be);
* :meth:`Driver.finished`: the runner's :class:`TrialOutcome` once it has finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.kube import names
from bench.record import ResultRecord
from bench.spec import BenchmarkSpec

Kind = tuple[str, str]  # (apiVersion, kind)
ObjRef = tuple[str, str, str]  # (apiVersion, kind, name)

CONFIGMAP: Kind = ("v1", "ConfigMap")
JOB: Kind = ("batch/v1", "Job")
NETWORKPOLICY: Kind = ("networking.k8s.io/v1", "NetworkPolicy")


@dataclass
class TrialOutcome:
    """What a trial attempt produced: the runner's records, or why it has none (or both)."""

    records: list[ResultRecord] = field(default_factory=list)
    error: str | None = None


class TrialTimedOut(Exception):
    """A trial passed its start-up or run deadline, or its pods cannot start; the message says
    which and why."""

    def __init__(self, message: str, cluster_ready: bool = False):
        super().__init__(message)
        self.cluster_ready = cluster_ready


@dataclass(frozen=True)
class TrialContext:
    """Everything a driver renders a trial's manifests from."""

    body: dict[str, Any]  # the Benchmark
    spec: BenchmarkSpec
    framework: str
    workers: int
    image: str

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def tname(self) -> str:
        return names.trial_name(self.body["metadata"]["name"], self.framework, self.workers)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    error: str | None = None  # the cluster can never become ready


def label(manifest: dict[str, Any]) -> str:
    """How messages name an object: ``RayJob <name>``, ``runner Job <name>``."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    return f"runner Job {name}" if kind == JOB[1] else f"{kind} {name}"


class Driver(Protocol):
    """One framework's objects (see the module docstring)."""

    # The trial field that records the cluster object's creation (so it is created once).
    created_field: str
    # Whether the runner's deadline also covers waiting for the pods (startupTimeoutSeconds):
    # a Dask runner starts once the scheduler's Service exists, before the workers run.
    runner_waits_for_pods: bool

    def manifests(self, ctx: TrialContext) -> list[dict[str, Any]]: ...

    def children(self, tname: str) -> list[ObjRef]: ...

    def owners(self, tname: str) -> list[tuple[str, str]]:
        """(kind, full-match regex of the name) of the controllers that create the pods."""
        ...

    def owned(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        """(kind, name) of further pod creators that ``obj``'s status names."""
        ...

    def state(self, kind: str, obj: dict[str, Any]) -> str | None:
        """``obj``'s state for a message (``phase=Pending``), or None."""
        ...

    def ready(self, obj: dict[str, Any]) -> Readiness: ...

    def finished(self, name: str, obj: dict[str, Any]) -> TrialOutcome | None: ...
