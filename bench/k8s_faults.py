"""Fault injection on Kubernetes: the runner deletes its own trial's worker (or head) pods.

The operator sets ``$TESTBED_FAULT_PODS`` on the runner of a Benchmark with ``faults`` (JSON):

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
"""
from __future__ import annotations

import json
import os
from typing import Any

from .engines.base import Victim
from .errors import RunError

ENV = "TESTBED_FAULT_PODS"


def fault_config() -> dict[str, Any] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise RunError(f"${ENV} is not JSON: {e.msg}") from None
    if not isinstance(cfg, dict):
        raise RunError(f"${ENV}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in ("namespace", "workers", "identity") if not cfg.get(k)]
    if missing:
        raise RunError(f"${ENV}: missing {', '.join(missing)}")
    return cfg


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
        return pod["metadata"]["name"]
    raise RunError(f"${ENV}: unknown identity {identity!r}; expected podIP or env:NAME")


def _running(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")),
                  key=lambda p: p["metadata"]["name"])


def pod_victims() -> list[Victim]:
    """The trial's running worker pods (and its head pod), each with a ``kill`` that deletes it;
    empty outside Kubernetes (no ``$TESTBED_FAULT_PODS``)."""
    cfg = fault_config()
    if cfg is None:
        return []
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from testbed_operator.kube import api_client

    ns = cfg["namespace"]
    core = client.CoreV1Api(api_client())

    def listed(selector: str) -> list[dict[str, Any]]:
        try:
            out = core.list_namespaced_pod(ns, label_selector=selector,
                                           _preload_content=False)
        except ApiException as e:
            raise RunError(f"cannot list the trial's pods in {ns!r} ({selector}): HTTP "
                           f"{e.status} {e.reason}; the runner's Role needs pods list and "
                           "delete (chart value runner.podFaults)") from None
        return json.loads(out.data).get("items") or []

    def deleter(name: str) -> Any:
        def kill() -> None:
            try:
                core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            except ApiException as e:
                raise RunError(f"cannot delete pod {ns}/{name}: HTTP {e.status} "
                               f"{e.reason}") from None
        return kill

    victims = [Victim("worker", pod_identity(p, cfg["identity"]), deleter(p["metadata"]["name"]))
               for p in _running(listed(cfg["workers"]))]
    if cfg.get("head"):
        victims += [Victim("head", p["metadata"]["name"], deleter(p["metadata"]["name"]))
                    for p in _running(listed(cfg["head"]))[:1]]
    return victims
