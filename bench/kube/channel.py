"""The result channel: one ConfigMap per trial, written by the runner, read by the operator.

The runner (``testbed runner --result-configmap NAMESPACE/NAME``) publishes its result records
as JSON in the ConfigMap's ``records.json`` key (:data:`~.names.RESULT_DATA_KEY`) with its own
scoped service account (``testbed-runner``: create/get/patch ConfigMaps in its namespace,
nothing else).  The operator reads the ConfigMap when the trial's Job/RayJob has finished
(:func:`read_payload`), copies the results into ``Benchmark.status`` and then deletes it.  This
survives the cluster's and the pod's deletion, does not depend on log retention or scraping, and
is not limited to the 4 KiB of a termination message.

If the runner fails before it has any records (bad spec, cluster unreachable) it still
publishes ``{"error": ...}`` so the operator can report the real reason.

An owner reference to the Benchmark (``$TESTBED_RESULT_OWNER``, JSON, set by the operator)
lets Kubernetes garbage-collect a ConfigMap the operator never got to read.
"""
from __future__ import annotations

import json
import os
from typing import Any

from .names import (
    BENCHMARK_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RESULT_DATA_KEY,
    RESULT_LABEL,
    RESULT_OWNER_ENV,
    RUNNER_FIELD_MANAGER,
    label_value,
)

MAX_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB


def parse_target(text: str) -> tuple[str, str]:
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name:
        raise ValueError(f"--result-configmap: expected NAMESPACE/NAME, got {text!r}")
    return ns, name


def build_result_configmap(ns: str, name: str, payload: dict[str, Any],
                           owner: dict[str, Any] | None = None,
                           labels: dict[str, str] | None = None) -> dict[str, Any]:
    text = json.dumps(payload, default=str, sort_keys=True)
    if len(text.encode()) > MAX_BYTES:
        # Drop the bulky per-record environment first; the timings and quality must survive.
        slim = dict(payload, records=[{k: v for k, v in r.items() if k != "environment"}
                                      for r in payload.get("records", [])])
        text = json.dumps(slim, default=str, sort_keys=True)
    meta: dict[str, Any] = {"name": name, "namespace": ns,
                            "labels": {MANAGED_BY_LABEL: MANAGED_BY, RESULT_LABEL: "true",
                                       **(labels or {})}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {RESULT_DATA_KEY: text}}


def publish(target: str, payload: dict[str, Any], host: str | None = None) -> None:
    """Write the result ConfigMap (replace its data when it already exists).  Synchronous: the
    runner is a plain CLI process."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from .client import RUNNER_USER_AGENT, api_client

    ns, name = parse_target(target)
    owner = json.loads(os.environ[RESULT_OWNER_ENV]) if os.environ.get(RESULT_OWNER_ENV) else None
    labels = {BENCHMARK_LABEL: label_value(owner["name"])} if owner else None
    body = build_result_configmap(ns, name, payload, owner, labels)
    fm = {"field_manager": RUNNER_FIELD_MANAGER}
    with api_client(host, RUNNER_USER_AGENT) as api:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_config_map(ns, body, **fm)
        except ApiException as e:
            if e.status != 409:
                raise
            core.patch_namespaced_config_map(name, ns, {"data": body["data"]}, **fm)


def read_payload(configmap: dict[str, Any]) -> dict[str, Any]:
    """The runner's payload, or ``{"error": ...}`` describing why it cannot be read."""
    text = (configmap.get("data") or {}).get(RESULT_DATA_KEY)
    if text is None:
        return {"error": f"result ConfigMap has no {RESULT_DATA_KEY!r} key"}
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        return {"error": f"result ConfigMap holds invalid JSON: {e.msg} at position {e.pos}"}
    if not isinstance(payload, dict) or not isinstance(payload.get("records", []), list):
        return {"error": "result ConfigMap: expected an object with a 'records' list"}
    return payload
