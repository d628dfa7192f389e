"""The Benchmark spec: one pydantic model shared by the CLI, the runner and the operator.

Field names are snake_case in Python and camelCase in YAML/the CRD (both are accepted when
reading).  Every model forbids unknown fields so that a typo is an error naming the field
(with the closest allowed name), and every model is strict: YAML's ``true`` or ``1.0`` where a
count is meant is an error, not 1.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import did_you_mean
from .frameworks import (
    FRAMEWORKS,
    Framework,
    in_process,
    is_baseline,
    is_framework,
    trial_workers,
)
from .operator_spec import FIELDS as OPERATOR_SPEC_FIELDS
from .params import DEFAULT_WORKLOADS, PARAMS, WORKLOAD_NAMES
from .quantities import cpu_cores, format_bytes, parse_quantity
from .spec_errors import SpecError, format_validation_error
from .spec_settings import MAX_WORKERS, DaskSettings, FaultSpec, RaySettings, SpecModel
from .spec_yaml import DuplicateKeyError, load_yaml_unique, loads_json_unique

# Re-exported: their homes are the modules above; callers keep importing them from here.
__all__ = ["FRAMEWORKS", "MAX_WORKERS", "DaskSettings", "FaultSpec", "Framework", "RaySettings",
           "SpecError", "format_bytes", "loads_json_unique", "parse_quantity"]

DATASETS = ("digits", "synthetic", "file", "s3", "parquet")
API_VERSION = "testbed.dev/v1alpha1"  # testbed_operator.crd's GROUP/VERSION (a test pins it)
KIND = "Benchmark"
MAX_CPU = 1024
"""Per worker, in cores: more than any real node has."""
MAX_MEMORY = 64 * 2**40
"""Per worker, in bytes (64Ti): more than any real node has."""


class WorkloadSpec(SpecModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in WORKLOAD_NAMES:
            raise ValueError(f"unknown workload {v!r}; expected one of {', '.join(WORKLOAD_NAMES)}"
                             + did_you_mean(v, WORKLOAD_NAMES))
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _check_params(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> WorkloadSpec:
        self: WorkloadSpec = handler(data)
        # Validate (and fill defaults) with the workload's own model; errors keep the path
        # below "params" so the message names e.g. workloads.0.params.n_neighbors.
        model = PARAMS[self.name]
        try:
            self.params = model.model_validate(self.params).model_dump()
        except ValidationError as e:
            errors: list[InitErrorDetails] = []
            for err in e.errors():
                loc = ("params", *err["loc"])
                if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                    # The formatter cannot tell which workload's parameters these are.
                    hint = did_you_mean(err["loc"][0], model.model_fields)
                    errors.append({"type": PydanticCustomError("extra_forbidden",
                                                               "unknown field" + hint),
                                   "loc": loc, "input": err["input"]})
                    continue
                errors.append({"type": err["type"], "loc": loc, "input": err["input"],
                               "ctx": err.get("ctx", {})})
            raise ValidationError.from_exception_data(cls.__name__, errors) from None
        return self


MAX_SYNTHETIC_VALUES = 2_000_000_000  # 16 GiB of float64, generated in every process

DATASET_FIELDS = {
    "digits": ("scale",),
    "synthetic": ("samples", "features", "classes", "kind", "noise", "informative"),
    "file": ("path", "format", "target"),
    "s3": ("uri", "endpoint_url", "region", "format", "target", "io_timeout_seconds"),
    "parquet": ("uri", "endpoint_url", "region", "io_timeout_seconds"),
}
"""The fields each dataset reads (bench.datasets) besides name, seed and test_size, which
every dataset reads."""


class DatasetSpec(SpecModel):
    name: str = "digits"
    scale: int = Field(default=1, ge=1, le=1000)
    """digits: the 1,797 rows are tiled this many times (with a little jitter)."""
    samples: int = Field(default=10_000, ge=1, le=100_000_000)
    features: int = Field(default=64, ge=1, le=100_000)
    classes: int = Field(default=10, ge=2)
    kind: Literal["classification", "blobs"] = "classification"
    noise: float = Field(default=0.01, ge=0)
    """classification: fraction of flipped labels; blobs: extra cluster standard deviation."""
    informative: PositiveInt | None = None
    path: str | None = None
    uri: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    format: Literal["csv", "parquet", "npz"] | None = None
    target: str = "target"
    """Label column for CSV/Parquet files."""
    io_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """s3: seconds to wait for the endpoint to connect or to answer, per attempt (3 attempts)."""
    test_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; expected one of {', '.join(DATASETS)}"
                             + did_you_mean(v, DATASETS))
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _unused_fields(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> DatasetSpec:
        # A field the chosen dataset never reads (`{name: digits, uri: ...}`) is a mistake,
        # not something to ignore.  Only fields given with a value other than the default
        # count: a whole model dumped and read back (the operator's --spec-json) has them all.
        self: DatasetSpec = handler(data)
        errors: list[InitErrorDetails] = []
        for field in sorted(self.model_fields_set - {"name", "seed", "test_size"}
                            - set(DATASET_FIELDS[self.name])):
            value = getattr(self, field)
            if value == type(self).model_fields[field].default:
                continue
            alias = to_camel(field)
            users = [n for n, fields in DATASET_FIELDS.items() if field in fields]
            errors.append({
                "type": PydanticCustomError(
                    "unused_field",
                    f"the {self.name} dataset does not use {alias}, only the "
                    f"{' and '.join(users)} dataset{'s' if len(users) > 1 else ''}; remove it "
                    f"or set dataset.name: {users[0]}"),
                "loc": (alias,), "input": value})
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return self

    @field_validator("uri")
    @classmethod
    def _s3_uri(cls, v: str | None, info: ValidationInfo) -> str | None:
        # parquet (a partitioned dataset, bench.data): a local directory or an S3 prefix.
        parquet = info.data.get("name") == "parquet"
        if v is None or (parquet and "://" not in v):
            return v
        if not re.fullmatch(r"s3://([^/]+)/(.+)", v):
            expected = "a directory or s3://bucket/prefix" if parquet else \
                "of the form s3://bucket/key"
            raise ValueError(f"{v!r} is not {expected}")
        return v

    @model_validator(mode="after")
    def _check_source(self) -> DatasetSpec:
        if self.name == "file" and not self.path:
            raise ValueError("dataset 'file' needs 'path' (a .csv, .parquet or .npz file)")
        if self.name == "s3" and not self.uri:
            raise ValueError("dataset 's3' needs 'uri' of the form s3://bucket/key")
        if self.name == "parquet" and not self.uri:
            raise ValueError("dataset 'parquet' needs 'uri': a directory or s3://bucket/prefix "
                             "made by `testbed data make`")
        if self.name == "synthetic" and self.samples * self.features > MAX_SYNTHETIC_VALUES:
            raise ValueError(
                f"samples x features = {self.samples * self.features:,} values "
                f"({self.samples * self.features * 8 / 2**30:.0f} GiB as float64) is above the "
                f"maximum of {MAX_SYNTHETIC_VALUES:,}; use a file or S3 dataset for data that "
                "large")
        if self.name == "synthetic" and self.informative and self.informative > self.features:
            raise ValueError(
                f"informative ({self.informative}) cannot exceed features ({self.features})"
            )
        return self


class ResourcesSpec(SpecModel):
    cpu: str = "1"
    memory: str = "2Gi"

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"cpu {v!r} is not a Kubernetes CPU quantity (e.g. '1', '500m')")
        q = str(v)
        if not re.fullmatch(r"\d+(\.\d+)?m?", q):
            raise ValueError(f"cpu {q!r} is not a Kubernetes CPU quantity (e.g. '1', '500m')")
        cores = cpu_cores(q)
        if cores <= 0:
            raise ValueError(f"cpu {q!r} must be more than 0")
        if cores > MAX_CPU:
            raise ValueError(f"cpu {q!r} is more than the maximum of {MAX_CPU} cores per worker")
        return q

    @field_validator("memory", mode="before")
    @classmethod
    def _mem(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError(f"memory {v!r} is not a Kubernetes memory quantity (e.g. '2Gi')")
        q = str(v)
        if not re.fullmatch(r"\d+(\.\d+)?([KMGTPE]i?|[kmgtpe])?", q):
            raise ValueError(f"memory {q!r} is not a Kubernetes memory quantity (e.g. '2Gi')")
        size = parse_quantity(q)
        if size <= 0:
            raise ValueError(f"memory {q!r} must be more than 0")
        if size > MAX_MEMORY:
            raise ValueError(f"memory {q!r} is more than the maximum of "
                             f"{format_bytes(MAX_MEMORY)} per worker")
        return q

    def memory_bytes(self) -> int:
        return parse_quantity(self.memory)

    def cpu_count(self) -> float:
        return cpu_cores(self.cpu)


def _default_frameworks() -> list[Framework]:
    return ["ray", "dask"]


class BenchmarkSpec(SpecModel):
    extra_yaml_fields: ClassVar[tuple[str, ...]] = ("workload",)
    """Accepted besides the fields (see _single_workload); offered for a typo."""

    name: str = "default"
    frameworks: list[Framework] = Field(default_factory=_default_frameworks, min_length=1)
    workers: list[PositiveInt] = Field(default_factory=lambda: [1, 2], min_length=1)
    workloads: list[WorkloadSpec] = Field(
        default_factory=lambda: [WorkloadSpec(name=w) for w in DEFAULT_WORKLOADS], min_length=1
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    repeats: int = Field(default=3, ge=1, le=1000)
    warmup: int = Field(default=1, ge=0, le=100)
    baselines: bool = True
    """Also run the single-process ``local`` baseline with 1 thread and with every core."""
    worker_resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    timeout_seconds: int = Field(default=1800, ge=1, le=7 * 24 * 3600)
    """Per trial: cluster start-up plus every run of one workload."""
    faults: FaultSpec | None = None
    ray: RaySettings = Field(default_factory=RaySettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)
    sample_interval: float = Field(default=0.1, gt=0, le=10)
    """Seconds between CPU/memory samples on each worker at first, at most 0.05 (so a short
    compute phase still gets 10 samples); a sampler doubles it as its points accumulate."""
    artifacts: bool = False
    """Also save the frameworks' own records of each trial's timed runs next to the results
    file (Dask's performance report, Ray's timeline) and start Ray's dashboard. Recording
    them costs the timed runs something: compare timings from runs without it."""

    @model_validator(mode="before")
    @classmethod
    def _single_workload(cls, data: Any) -> Any:
        # The CRD sketch has `workload: {name, params}`; accept it as a one-element list.
        if isinstance(data, dict) and "workload" in data:
            if "workloads" in data:
                raise ValueError("give either 'workload' or 'workloads', not both")
            data = dict(data)
            data["workloads"] = [data.pop("workload")]
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(
                f"name {v!r} must be a DNS label: lowercase letters, digits and '-', 1-63 chars"
            )
        return v

    @field_validator("frameworks", mode="before")
    @classmethod
    def _frameworks(cls, v: Any) -> Any:
        # Before the type check, so an unknown name gets this message (with a suggestion)
        # rather than pydantic's for a Literal; a non-string is left to the type check.
        if not isinstance(v, list):
            return v
        for f in v:
            if isinstance(f, str) and not is_framework(f):
                raise ValueError(f"unknown framework {f!r}; expected one of {', '.join(FRAMEWORKS)}"
                                 + did_you_mean(f, FRAMEWORKS))
        return v

    @field_validator("frameworks")
    @classmethod
    def _unique_frameworks(cls, v: list[Framework]) -> list[Framework]:
        return list(dict.fromkeys(v))

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: list[int]) -> list[int]:
        for w in v:
            if w > MAX_WORKERS:
                raise ValueError(f"worker count {w} is above the maximum of {MAX_WORKERS}")
        return sorted(set(v))

    def trials(self, cores: int | None = None) -> list[tuple[Framework, int]]:
        """(framework, workers) pairs in run order: the baselines first (every core and 1
        thread, and the spec's worker counts when the baseline is asked for by name), then
        the other in-process frameworks named (Dask's single-machine schedulers: the spec's
        worker counts, see ``trial_workers``), then each framework."""
        cores = cores or os.cpu_count() or 1
        out: list[tuple[Framework, int]] = []
        for baseline in [f for f in FRAMEWORKS if is_baseline(f)]:
            threads = sorted({1, cores}) if self.baselines else []
            if baseline in self.frameworks:
                threads = sorted(set(threads) | set(self.workers))
            out += [(baseline, t) for t in threads]
        out += [(f, w) for f in FRAMEWORKS if f in self.frameworks and in_process(f)
                and not is_baseline(f) for w in trial_workers(f, self.workers)]
        out += [(f, w) for f in self.frameworks if not in_process(f) for w in self.workers]
        return out


def check_fits_machine(spec: BenchmarkSpec, source: str = "spec",
                       total_memory: int | None = None) -> None:
    """For a local run (every worker a process on this machine): the largest worker count ×
    ``workerResources.memory`` must fit in this machine's memory.  The model's own caps are for
    Kubernetes nodes; the operator does not call this."""
    if all(in_process(f) for f in spec.frameworks):
        return  # in-process frameworks start no workers; worker resources do not apply
    if total_memory is None:
        import psutil

        total_memory = psutil.virtual_memory().total
    workers, each = max(spec.workers), spec.worker_resources.memory_bytes()
    if workers * each > total_memory:
        raise SpecError(
            f"{source}.workerResources.memory: {workers} worker{'s' if workers > 1 else ''} × "
            f"{spec.worker_resources.memory} = {format_bytes(workers * each)} is more than this "
            f"machine's {format_bytes(total_memory)} of memory; lower workerResources.memory or "
            f"the worker count")


# Fields of a Benchmark resource's spec that only the Kubernetes operator reads (see
# testbed_operator.crd); the engine's model does not have them.
OPERATOR_FIELDS = OPERATOR_SPEC_FIELDS


RESOURCE_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def _resource_spec(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The spec of a whole Benchmark resource, checked to be one (not a ConfigMap, say)."""
    where = (lambda key: key) if source == "spec" else (lambda key: f"{source}.{key}")
    for key, expected in (("kind", KIND), ("apiVersion", API_VERSION)):
        got = data.get(key)
        if got is None:
            other = "kind" if key == "apiVersion" else "apiVersion"
            raise SpecError(f"{where(key)}: missing; a resource with {other} needs "
                            f"apiVersion: {API_VERSION} and kind: {KIND} (or give a bare spec, "
                            f"without either)")
        if got != expected:
            raise SpecError(f"{where(key)}: expected {expected!r}, got {got!r}; only a {KIND} "
                            f"resource ({API_VERSION}) or a bare spec can be run")
    for key in data:
        if key not in RESOURCE_FIELDS:
            raise SpecError(f"{where(str(key))}: unknown field of a {KIND} resource; expected "
                            f"{', '.join(RESOURCE_FIELDS)}" + did_you_mean(key, RESOURCE_FIELDS))
    for key in ("metadata", "spec"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise SpecError(f"{where(key)}: expected a mapping of fields, got "
                            f"{type(data[key]).__name__}")
    spec = {k: v for k, v in (data.get("spec") or {}).items() if k not in OPERATOR_FIELDS}
    name = (data.get("metadata") or {}).get("name")
    if name and "name" not in spec:
        spec["name"] = name
    return spec


def parse_spec(data: Any, source: str = "spec") -> BenchmarkSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    # Accept a whole Benchmark resource (apiVersion/kind/metadata/spec) as well as a bare spec.
    # Its Kubernetes-only fields (image, failure policy, ...) concern the operator, not a run.
    if "kind" in data or "apiVersion" in data:
        data = _resource_spec(data, source)
    try:
        return BenchmarkSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, prefix=source, model=BenchmarkSpec)) from None


def load_spec(path: str | os.PathLike[str] | None) -> BenchmarkSpec:
    if path is None:
        return BenchmarkSpec()
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file {str(p)!r} does not exist") from None
    except OSError as e:
        raise SpecError(f"spec file {str(p)!r} cannot be read: {e.strerror}") from None
    try:
        data = load_yaml_unique(text)
    except DuplicateKeyError as e:
        raise SpecError(f"{p.name}: duplicate key {e.key!r} at line {e.line} (first at line "
                        f"{e.first_line}); each field may be given once") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise SpecError(f"spec file {str(p)!r} is not valid YAML{at}") from None
    return parse_spec(data, source=p.name)
