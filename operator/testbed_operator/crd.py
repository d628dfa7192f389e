"""The ``Benchmark`` CustomResourceDefinition, generated from the engine's spec model.

The spec's ``openAPIV3Schema`` is derived from :class:`bench.spec.BenchmarkSpec` (pydantic's
JSON schema, converted to a Kubernetes *structural* schema: ``$ref`` inlined, ``anyOf [X, null]``
turned into ``nullable``, exclusive bounds in OpenAPI 3.0 form), then enriched with what
pydantic cannot express: enums for frameworks, workloads and datasets, and workload ``params``
as free-form objects (their per-workload validation is semantic, done by the operator with the
same pydantic models, and reported in the status naming the field).

``python -m testbed_operator.crd > operator/crds/benchmark.yaml`` regenerates the file that
the tests compare against.
"""
from __future__ import annotations

import copy
import sys
from typing import Any, get_args

import yaml

from bench.kube import names
from bench.operator_spec import DEFAULTS, FailurePolicy
from bench.params import WORKLOAD_NAMES
from bench.spec import DATASETS, FRAMEWORKS, BenchmarkSpec, ResourcesSpec

GROUP = names.GROUP  # one home: bench.kube.names
VERSION = "v1alpha1"
KIND = "Benchmark"
PLURAL = "benchmarks"
SINGULAR = "benchmark"
SHORT_NAMES = ["bm"]
# `kubectl get all` lists Benchmarks next to the RayJobs (KubeRay's CRDs are in `all` too), Jobs
# and pods they own, so one command shows a trial and what it runs on.
CATEGORIES = ["all"]

_DROP = {"title", "description"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """pydantic JSON schema → Kubernetes structural OpenAPI v3 schema."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1:
            inner = _structural(non_null[0], defs)
            out.update(inner)
            if len(non_null) != len(any_of):
                out["nullable"] = True
        else:  # e.g. int | str: leave it to the operator's semantic check
            out["x-kubernetes-int-or-string"] = True
    for key, value in node.items():
        if key in _DROP or key in ("anyOf", "$defs"):
            continue
        if key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = _structural(value, defs)
            continue  # `false` is the structural default (unknown fields are pruned)
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
            continue
        out[key] = _structural(value, defs)
    if out.get("default", 0) is None:
        out.pop("default")  # null defaults are not allowed in structural schemas
    return out


def spec_schema() -> dict[str, Any]:
    raw = BenchmarkSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    props = schema["properties"]
    props.pop("name")  # the resource's metadata.name names the benchmark
    for key in ("cpu", "memory"):  # `cpu: 1` and `cpu: "500m"` are both Kubernetes quantities
        props["workerResources"]["properties"][key] = {
            "x-kubernetes-int-or-string": True, "default": ResourcesSpec().model_dump()[key]}
    props["frameworks"]["items"]["enum"] = list(FRAMEWORKS)
    workload = props["workloads"]["items"]
    workload["properties"]["name"]["enum"] = list(WORKLOAD_NAMES)
    workload["properties"]["params"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
        "description": "Workload parameters; validated per workload by the operator."}
    workload.pop("default", None)
    props["workload"] = copy.deepcopy(workload)
    props["workload"]["description"] = "A single workload (shorthand for workloads: [..])."
    props["dataset"]["properties"]["name"]["enum"] = list(DATASETS)
    for key in ("workloads", "dataset", "workerResources"):
        props[key].pop("default", None)  # the operator fills these from the same model
    schema["description"] = "A Ray-vs-Dask benchmark: one trial per framework x worker count."
    props["image"] = {"type": "string", "description": "Runner image (defaults to the operator's)."}
    # The operator-only fields (bench.operator_spec.OperatorSpec): their defaults from there.
    props["failurePolicy"] = {"type": "string", "enum": list(get_args(FailurePolicy)),
                              "default": DEFAULTS["failurePolicy"],
                              "description": "After a failed trial: run the rest, or stop."}
    props["keepClusters"] = {"type": "boolean", "default": DEFAULTS["keepClusters"],
                             "description": "Keep each trial's cluster after the trial."}
    props["startupTimeoutSeconds"] = {
        "type": "integer", "minimum": 1, "default": DEFAULTS["startupTimeoutSeconds"],
        "description": "Seconds a trial's cluster may take to become ready before the trial fails."}
    props["trialRetries"] = {
        "type": "integer", "minimum": 0, "maximum": 5, "default": DEFAULTS["trialRetries"],
        "description": "Attempts after the first for a trial that fails without results "
                       "(runner killed, cluster lost, timeout). Failed workloads are not retried."}
    props["credentialsSecret"] = {
        "type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        "description": "Secret (same namespace) whose keys become the runner's environment, "
                       "e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for an S3 dataset. "
                       "Credentials never go in the spec itself."}
    props["resultsUri"] = {"type": "string", "pattern": r"^s3://[^/]+(/.*)?$",
                           "description": "Optional s3://bucket/prefix for result JSON objects."}
    return schema


def condition_schema() -> dict[str, Any]:
    """``metav1.Condition`` as Kubernetes declares it (k8s.io/apimachinery/pkg/apis/meta/v1/
    types.go: the validation markers on ``Condition``)."""
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316, "pattern":
                     r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 1024, "minLength": 1,
                       "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
            "message": {"type": "string", "maxLength": 32768},
        },
    }


def status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "phase": {"type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "progress": {"type": "string"},
            "currentTrial": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "workload": {"type": "string"},
            "frameworks": {"type": "string"},
            "trials": {"type": "array", "items": {"type": "object",
                                                  "x-kubernetes-preserve-unknown-fields": True}},
            "summary": {"type": "array", "items": {"type": "object",
                                                   "x-kubernetes-preserve-unknown-fields": True}},
            # One entry per type (Running, Succeeded, Failed), merged by type.
            "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"], "items": condition_schema()},
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": SHORT_NAMES, "listKind": f"{KIND}List",
                      "categories": CATEGORIES},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Workload", "type": "string", "jsonPath": ".status.workload"},
                    {"name": "Frameworks", "type": "string", "jsonPath": ".status.frameworks"},
                    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    # `kubectl get benchmarks -o wide`:
                    {"name": "Trial", "type": "string", "jsonPath": ".status.currentTrial",
                     "priority": 1, "description": "The trial running now (framework x workers)."},
                    {"name": "Message", "type": "string", "jsonPath": ".status.message",
                     "priority": 1, "description": "Progress, or the first failure."},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": status_schema(),
                    },
                }},
            }],
        },
    }


def crd_yaml() -> str:
    header = ("# Generated by `python -m testbed_operator.crd` from bench.spec.BenchmarkSpec.\n"
              "# Do not edit by hand: tests fail when this file and the generator disagree.\n")
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(crd_yaml())
