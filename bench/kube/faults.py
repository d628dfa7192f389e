"""Fault injection on Kubernetes: the runner deletes its own trial's worker (or head) pods.

The operator sets ``$TESTBED_FAULT_PODS`` (:data:`~.names.FAULT_PODS_ENV`) on the runner of a
Benchmark with ``faults`` (JSON):

``namespace``  the trial's namespace;
``workers``    a label selector for the trial's worker pods;
``head``       a label selector for its Ray head / Dask scheduler pod;
``identity``   how the framework names a worker: ``podIP`` (a Ray node's address) or
               ``env:NAME`` (a container environment variable, e.g. ``DASK_WORKER_NAME``).

Pods are deleted with a grace period of 0: the API object goes at once (the controllers make a
replacement), and the kubelet stops the containers with SIGTERM and SIGKILL after its minimum
grace period of 2 s (pkg/kubelet/kuberuntime). A Ray node can drain in that time without
failing a task; its death shows as the GCS marking it dead. The deletion uses the runner's
service account (``testbed-runner``: pods ``list`` and ``delete`` in its namespace;
the chart grants that when ``runner.podFaults`` is true).  KubeRay and the Dask operator then
replace the pod, as a nanny replaces a local worker process.

The runner command hands :func:`victim_source` to the engine (``Engine.external_victims``):
the engines and ``bench.faults`` know nothing of Kubernetes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.engines.base import Victim, VictimSource
from bench.errors import RunError

from .names import FAULT_PODS_ENV

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api


def fault_config() -> dict[str, Any] | None:
    raw = os.environ.get(FAULT_PODS_ENV)
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RunError(f"${FAULT_PODS_ENV} is not JSON: {e.msg}") from None
    if not isinstance(cfg, dict):
        raise RunError(f"${FAULT_PODS_ENV}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in ("namespace", "workers", "identity") if not cfg.get(k)]
    if missing:
        raise RunError(f"${FAULT_PODS_ENV}: missing {', '.join(missing)}")
    return cfg


def victim_source() -> VictimSource | None:
    """What the runner gives its engine: :func:`pod_victims` when the operator named the
    trial's pods (``$TESTBED_FAULT_PODS`` is set), else None (nothing to kill)."""
    return pod_victims if os.environ.get(FAULT_PODS_ENV) else None


def pod_identity(pod: dict[str, Any], identity: str) -> str:
    """What the framework calls the process in ``pod`` (see the module docstring)."""
    if identity == "podIP":
        return str((pod.get("status") or {}).get("podIP") or pod["metadata"]["name"])
    if identity.startswith("env:"):
        var = identity[4:]
        for c in (pod.get("spec") or {}).get("containers") or []:
            for e in c.get("env") or []:
                if e.get("name") == var and "value" in e:
                    return str(e["value"])
        return str(pod["metadata"]["name"])
    raise RunError(f"${FAULT_PODS_ENV}: unknown identity {identity!r}; expected podIP or env:NAME")


def _running(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")),
                  key=lambda p: str(p["metadata"]["name"]))


class _Pods:
    """The runner's calls on its trial's pods in one namespace."""

    def __init__(self, core: CoreV1Api, ns: str):
        self.core, self.ns = core, ns

    def running(self, selector: str) -> list[dict[str, Any]]:
        from kubernetes.client.rest import ApiException

        try:
            out = self.core.list_namespaced_pod(self.ns, label_selector=selector,
                                                _preload_content=False)
        except ApiException as e:
            raise RunError(f"cannot list the trial's pods in {self.ns!r} ({selector}): HTTP "
                           f"{e.status} {e.reason}; the runner's Role needs pods list and "
                           "delete (chart value runner.podFaults)") from None
        return _running(json.loads(out.data).get("items") or [])

    def deleter(self, name: str) -> Callable[[], None]:
        from kubernetes.client.rest import ApiException

        def kill() -> None:
            try:
                self.core.delete_namespaced_pod(name, self.ns, grace_period_seconds=0)
            except ApiException as e:
                raise RunError(f"cannot delete pod {self.ns}/{name}: HTTP {e.status} "
                               f"{e.reason}") from None
        return kill


def pod_victims() -> list[Victim]:
    """The trial's running worker pods (and its head pod), each with a ``kill`` that deletes it;
    empty outside Kubernetes (no ``$TESTBED_FAULT_PODS``)."""
    cfg = fault_config()
    if cfg is None:
        return []
    from kubernetes import client

    from .client import api_client

    pods = _Pods(client.CoreV1Api(api_client()), cfg["namespace"])
    victims = [Victim("worker", pod_identity(p, cfg["identity"]),
                      pods.deleter(p["metadata"]["name"]))
               for p in pods.running(cfg["workers"])]
    if cfg.get("head"):
        victims += [Victim("head", p["metadata"]["name"], pods.deleter(p["metadata"]["name"]))
                    for p in pods.running(cfg["head"])[:1]]
    return victims
