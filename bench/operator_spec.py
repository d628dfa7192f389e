"""The operator-only fields of a Benchmark's spec, with their defaults, in one place.

A Benchmark resource's ``spec`` is the engine's :class:`bench.spec.BenchmarkSpec` plus these
fields, which only the Kubernetes operator reads: the engine's model leaves them out
(:data:`bench.spec.OPERATOR_FIELDS` is :data:`FIELDS`), the operator's validation and manifest
builders read their defaults here, and the CRD schema describes them.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

FailurePolicy = Literal["continue", "stop"]


class OperatorSpec(BaseModel):
    """What the operator reads from a Benchmark's spec beyond the engine's fields (each with
    its default). Attributes are snake_case; the resource's keys are camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    image: str | None = None  # the runner image; None: the operator's default image
    failure_policy: FailurePolicy = "continue"
    keep_clusters: bool = False
    results_uri: str | None = None  # s3://bucket[/prefix]
    startup_timeout_seconds: int = 600
    credentials_secret: str | None = None
    trial_retries: int = 0

    @classmethod
    def of(cls, spec: dict[str, Any]) -> OperatorSpec:
        """The operator's fields of a Benchmark's ``spec`` (other keys ignored), unchecked:
        :func:`testbed_operator.validation.validate_benchmark` checks them with messages that
        name the field."""
        return cls.model_construct(**{name: spec[key] for name, key in _KEYS.items()
                                      if key in spec})


_KEYS: dict[str, str] = {name: to_camel(name) for name in OperatorSpec.model_fields}
FIELDS: tuple[str, ...] = tuple(_KEYS.values())
DEFAULTS: dict[str, Any] = {_KEYS[name]: f.default for name, f in OperatorSpec.model_fields.items()}
