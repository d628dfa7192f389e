"""Semantic checks of a Benchmark that the CRD schema cannot express.

The handlers call :func:`validate_benchmark` first; a problem sets the Benchmark's phase to
Failed with the returned message (which names the field) instead of crashing or retrying:

* the engine's own spec model (workload parameters of the wrong kind, unknown parameters,
  an S3 URI without a bucket, ...), the same model ``testbed run`` uses;
* the operator-only fields (``resultsUri``, ``failurePolicy``, ``image``);
* the namespace's ResourceQuota: the largest trial (head or scheduler, N workers and the runner
  pod) must fit in what the quota allows.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from bench.operator_spec import DEFAULTS
from bench.spec import OPERATOR_FIELDS, BenchmarkSpec, SpecError, parse_quantity, parse_spec


class BenchmarkInvalid(ValueError):
    """The message names the field and what was expected."""


def split_spec(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine spec, operator-only fields) from a Benchmark's ``spec``."""
    spec = dict(body.get("spec") or {})
    extra = {k: spec.pop(k) for k in OPERATOR_FIELDS if k in spec}
    return spec, extra


def spec_name(name: str) -> str:
    """The engine's run name (a DNS label) for a Benchmark's metadata.name, which Kubernetes
    allows to be a longer DNS subdomain with dots."""
    if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        return name
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:54].strip("-") or "benchmark"
    return f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def validate_benchmark(body: dict[str, Any],
                       quotas: Sequence[dict[str, Any]] = ()) -> BenchmarkSpec:
    raw, extra = split_spec(body)
    name = (body.get("metadata") or {}).get("name")
    if name is not None and (not isinstance(name, str) or not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
            or len(name) > 253):
        raise BenchmarkInvalid(f"metadata.name: {str(name)[:80]!r} is not a valid resource name "
                               "(lowercase DNS subdomain, at most 253 characters)")
    try:
        spec = parse_spec({**raw, "name": spec_name(name)} if name and "name" not in raw else raw,
                          source="spec")
    except SpecError as e:
        raise BenchmarkInvalid(str(e)) from None
    uri = extra.get("resultsUri")
    if uri is not None and not re.fullmatch(r"s3://[^/]+(/.*)?", str(uri)):
        raise BenchmarkInvalid(f"spec.resultsUri: {uri!r} is not of the form s3://bucket[/prefix]")
    if extra.get("failurePolicy", DEFAULTS["failurePolicy"]) not in ("continue", "stop"):
        raise BenchmarkInvalid("spec.failurePolicy: expected 'continue' or 'stop'")
    retries = extra.get("trialRetries", DEFAULTS["trialRetries"])
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 5:
        raise BenchmarkInvalid("spec.trialRetries: expected a whole number from 0 to 5, got "
                               f"{retries!r}")
    startup = extra.get("startupTimeoutSeconds", DEFAULTS["startupTimeoutSeconds"])
    if isinstance(startup, bool) or not isinstance(startup, int) or startup < 1:
        raise BenchmarkInvalid(f"spec.startupTimeoutSeconds: expected a whole number of seconds "
                               f">= 1, got {startup!r}")
    for quota in quotas:
        check_quota(spec, quota)
    return spec


def trial_requests(spec: BenchmarkSpec, workers: int) -> dict[str, float]:
    """What one trial requests: N workers, one head/scheduler and one runner pod, each sized
    like a worker (the manifests give every pod the spec's workerResources)."""
    pods = workers + 2
    return {"pods": pods, "cpu": pods * spec.worker_resources.cpu_count(),
            "memory": pods * spec.worker_resources.memory_bytes()}


def check_quota(spec: BenchmarkSpec, quota: dict[str, Any]) -> None:
    hard = (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard") or {}
    qname = (quota.get("metadata") or {}).get("name", "?")
    workers = max(spec.workers)
    need = trial_requests(spec, workers)
    limits: dict[str, tuple[str, Callable[[str], float]]] = {
        "pods": ("pods", float),
        "cpu": ("requests.cpu", _cpu), "memory": ("requests.memory", parse_quantity),
    }
    for key, (field, parse) in limits.items():
        for name in (field, key if key != "pods" else None,
                     f"limits.{key}" if key != "pods" else None):
            if name and name in hard:
                allowed = parse(str(hard[name]))
                if need[key] > allowed:
                    shown = _fmt(key, need[key])
                    raise BenchmarkInvalid(
                        f"spec.workers: the largest trial ({workers} workers + head/scheduler + "
                        f"runner) needs {shown} {name}, but ResourceQuota {qname!r} allows "
                        f"{hard[name]}")


def _cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _fmt(key: str, value: float) -> str:
    if key == "memory":
        return f"{value / 2**30:.1f}Gi"
    return f"{value:g}"
