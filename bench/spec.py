"""The Benchmark spec: one pydantic model shared by the CLI, the runner and the operator.

Field names are snake_case in Python and camelCase in YAML/the CRD (both are accepted when
reading).  Every model forbids unknown fields so that a typo is an error naming the field
(with the closest allowed name), and every model is strict: YAML's ``true`` or ``1.0`` where a
count is meant is an error, not 1.
"""
from __future__ import annotations

import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from .errors import did_you_mean
from .kube.spec import FIELDS as OPERATOR_SPEC_FIELDS
from .params import DEFAULT_WORKLOADS, PARAMS, WORKLOAD_NAMES

FRAMEWORKS = ("local", "ray", "dask", "dask-on-ray")
DATASETS = ("digits", "synthetic", "file", "s3")
MAX_WORKERS = 1024
API_VERSION = "testbed.dev/v1alpha1"  # testbed_operator.crd's GROUP/VERSION (a test pins it)
KIND = "Benchmark"
MAX_CPU = 1024
"""Per worker, in cores: more than any real node has."""
MAX_MEMORY = 64 * 2**40
"""Per worker, in bytes (64Ti): more than any real node has."""


class SpecError(ValueError):
    """A spec that cannot be run; the message names the field and what was expected."""


class _Model(BaseModel):
    # strict: no bool -> int (true -> 1), float -> int (1.0 -> 1) or str -> number coercion;
    # the CRD says `type: integer` for the same fields, which Kubernetes enforces alike.
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=False, strict=True
    )


class WorkloadSpec(_Model):
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
    def _check_params(cls, data: Any, handler: Any) -> "WorkloadSpec":
        self = handler(data)
        # Validate (and fill defaults) with the workload's own model; errors keep the path
        # below "params" so the message names e.g. workloads.0.params.n_neighbors.
        model = PARAMS[self.name]
        try:
            self.params = model.model_validate(self.params).model_dump()
        except ValidationError as e:
            errors = []
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
}
"""The fields each dataset reads (bench.datasets) besides name, seed and test_size, which
every dataset reads."""


class DatasetSpec(_Model):
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
    def _unused_fields(cls, data: Any, handler: Any) -> "DatasetSpec":
        # A field the chosen dataset never reads (`{name: digits, uri: ...}`) is a mistake,
        # not something to ignore.  Only fields given with a value other than the default
        # count: a whole model dumped and read back (the operator's --spec-json) has them all.
        self = handler(data)
        errors = []
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
    def _s3_uri(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"s3://([^/]+)/(.+)", v):
            raise ValueError(f"{v!r} is not of the form s3://bucket/key")
        return v

    @model_validator(mode="after")
    def _check_source(self) -> "DatasetSpec":
        if self.name == "file" and not self.path:
            raise ValueError("dataset 'file' needs 'path' (a .csv, .parquet or .npz file)")
        if self.name == "s3":
            if not self.uri:
                raise ValueError("dataset 's3' needs 'uri' of the form s3://bucket/key")
        if self.name == "synthetic" and self.samples * self.features > MAX_SYNTHETIC_VALUES:
            raise ValueError(
                f"samples x features = {self.samples * self.features:,} values "
                f"({self.samples * self.features * 8 / 2**30:.0f} GiB as float64) is above the "
                f"maximum of {MAX_SYNTHETIC_VALUES:,}; use a file or S3 dataset for data that large")
        if self.name == "synthetic" and self.informative and self.informative > self.features:
            raise ValueError(
                f"informative ({self.informative}) cannot exceed features ({self.features})"
            )
        return self


class ResourcesSpec(_Model):
    cpu: str = "1"
    memory: str = "2Gi"

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"cpu {v!r} is not a Kubernetes CPU quantity (e.g. '1', '500m')")
        v = str(v)
        if not re.fullmatch(r"\d+(\.\d+)?m?", v):
            raise ValueError(f"cpu {v!r} is not a Kubernetes CPU quantity (e.g. '1', '500m')")
        cores = _cpu_cores(v)
        if cores <= 0:
            raise ValueError(f"cpu {v!r} must be more than 0")
        if cores > MAX_CPU:
            raise ValueError(f"cpu {v!r} is more than the maximum of {MAX_CPU} cores per worker")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _mem(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError(f"memory {v!r} is not a Kubernetes memory quantity (e.g. '2Gi')")
        v = str(v)
        if not re.fullmatch(r"\d+(\.\d+)?([KMGTPE]i?|[kmgtpe])?", v):
            raise ValueError(f"memory {v!r} is not a Kubernetes memory quantity (e.g. '2Gi')")
        size = parse_quantity(v)
        if size <= 0:
            raise ValueError(f"memory {v!r} must be more than 0")
        if size > MAX_MEMORY:
            raise ValueError(f"memory {v!r} is more than the maximum of "
                             f"{format_bytes(MAX_MEMORY)} per worker")
        return v

    def memory_bytes(self) -> int:
        return parse_quantity(self.memory)

    def cpu_count(self) -> float:
        return _cpu_cores(self.cpu)


def _cpu_cores(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


class FaultSpec(_Model):
    """One extra run per trial during which workers (and optionally the head) are killed."""

    kill_workers: int = Field(default=1, ge=0, le=MAX_WORKERS)
    kill_head: bool = False
    """Also kill the Ray head (GCS) / the Dask scheduler at the same moment."""
    after_seconds: float | None = Field(default=None, ge=0, le=24 * 3600)
    after_fraction: float | None = Field(default=None, gt=0, lt=1)
    """Kill once this fraction of the workload's fault-free median time has passed."""
    after_tasks_fraction: float | None = Field(default=None, gt=0, lt=1)
    """Kill once this fraction of the run's tasks (as many as a fault-free run submitted) has
    finished: a fraction of the work itself (Ray and Dask ``map`` tasks)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Picks the victims (``random.Random(seed)``), so a run repeats."""
    detect_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """How long to wait, after the kill, for the framework to notice (and for a hung run)."""

    @model_validator(mode="after")
    def _when(self) -> "FaultSpec":
        given = [n for n, v in (("afterSeconds", self.after_seconds),
                                 ("afterFraction", self.after_fraction),
                                 ("afterTasksFraction", self.after_tasks_fraction)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of afterSeconds, afterFraction and afterTasksFraction, "
                             f"not {' and '.join(given)}")
        if not given:
            self.after_seconds = 1.0
        if self.kill_workers == 0 and not self.kill_head:
            raise ValueError("nothing to kill: set killWorkers above 0 or killHead: true")
        return self


class RaySettings(_Model):
    """Ray's fault-tolerance knobs, applied to every Ray and Dask-on-Ray trial and recorded."""

    max_retries: int = Field(default=3, ge=0, le=100)
    """``ray.remote(max_retries=...)``: re-runs of a task whose worker or node died."""
    health_check_period_ms: int = Field(default=3000, ge=100, le=600_000)
    """GCS health checks of each node (``RAY_health_check_period_ms`` on the head)."""
    health_check_failure_threshold: int = Field(default=5, ge=1, le=100)
    """Missed checks before a node is marked dead (``RAY_health_check_failure_threshold``)."""
    auth_mode: Literal["token", "disabled"] = "token"
    """Ray's token authentication (``RAY_AUTH_MODE``) for the trial's cluster and its driver.
    ``token``: a token made for the run, never ``~/.ray/auth_token`` (locally: a file in the
    run's temp dir; on Kubernetes: KubeRay's ``authOptions``). ``disabled``: anyone who can
    reach the cluster's ports may use it."""

    def head_env(self) -> dict[str, str]:
        """The head's (GCS's) settings as Ray config environment variables (local head
        processes and KubeRay head pods alike)."""
        return {"RAY_health_check_period_ms": str(self.health_check_period_ms),
                "RAY_health_check_failure_threshold": str(self.health_check_failure_threshold)}


class DaskSettings(_Model):
    """Dask's fault-tolerance knobs, applied to every Dask trial and recorded."""

    allowed_failures: int = Field(default=3, ge=0, le=100)
    """``distributed.scheduler.allowed-failures``: worker deaths a task survives before
    ``KilledWorker``."""
    nanny: bool = True
    """Run each worker under a nanny, which restarts a worker process that dies."""

    def scheduler_env(self) -> dict[str, str]:
        """The scheduler's settings as Dask config environment variables."""
        return {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(self.allowed_failures)}


class BenchmarkSpec(_Model):
    name: str = "default"
    frameworks: list[str] = Field(default_factory=lambda: ["ray", "dask"], min_length=1)
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
    """Seconds between CPU/memory samples on each worker."""

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

    @field_validator("frameworks")
    @classmethod
    def _frameworks(cls, v: list[str]) -> list[str]:
        for f in v:
            if f not in FRAMEWORKS:
                raise ValueError(f"unknown framework {f!r}; expected one of {', '.join(FRAMEWORKS)}"
                                 + did_you_mean(f, FRAMEWORKS))
        return list(dict.fromkeys(v))

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: list[int]) -> list[int]:
        for w in v:
            if w > MAX_WORKERS:
                raise ValueError(f"worker count {w} is above the maximum of {MAX_WORKERS}")
        return sorted(set(v))

    def trials(self, cores: int | None = None) -> list[tuple[str, int]]:
        """(framework, workers) pairs in run order: local baselines first, then each framework."""
        cores = cores or os.cpu_count() or 1
        out: list[tuple[str, int]] = []
        local_threads = sorted({1, cores}) if self.baselines else []
        if "local" in self.frameworks:
            local_threads = sorted(set(local_threads) | set(self.workers))
        out += [("local", t) for t in local_threads]
        out += [(f, w) for f in self.frameworks if f != "local" for w in self.workers]
        return out


_QUANTITY = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18,
             "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(q: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]i?|[kmgtpe])?", q)
    if not m:
        raise SpecError(f"{q!r} is not a quantity")
    return int(float(m.group(1)) * _QUANTITY[m.group(2) or ""])


def format_bytes(n: float) -> str:
    """``n`` bytes as a binary quantity: 2Gi, 1.5Ti, 512Mi."""
    for unit, size in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20),
                       ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + unit
    return f"{n:g}"


def check_fits_machine(spec: BenchmarkSpec, source: str = "spec",
                       total_memory: int | None = None) -> None:
    """For a local run (every worker a process on this machine): the largest worker count ×
    ``workerResources.memory`` must fit in this machine's memory.  The model's own caps are for
    Kubernetes nodes; the operator does not call this."""
    if not any(f != "local" for f in spec.frameworks):
        return  # the local baselines run in this process; worker resources do not apply
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


def _unwrap(tp: Any) -> Any:
    """``X`` from ``X | None`` and ``Annotated[X, ...]``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def _model_holding(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field ``loc[-1]`` is, following ``loc`` from ``model`` (None when the
    path leads elsewhere, e.g. into a workload's free-form params)."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = typing.get_args(tp)[0]
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return None
        field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        tp = field.annotation
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    """The names a user writes in YAML: camelCase aliases (``workload`` too for the spec)."""
    names = [f.alias or n for n, f in model.model_fields.items()]
    return names + ["workload"] if model is BenchmarkSpec else names


def format_validation_error(err: ValidationError, prefix: str = "spec",
                            model: type[BaseModel] | None = None) -> str:
    """One line per error: ``<prefix>.<field path>: <what was expected>``.  ``model`` (default
    :class:`BenchmarkSpec`) is the model validated, used to suggest a field name for a typo."""
    model = model or BenchmarkSpec
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            if not msg.startswith("unknown field"):  # workload params come with their hint
                holder = _model_holding(model, tuple(e["loc"]))
                msg = "unknown field" + (did_you_mean(e["loc"][-1], _field_names(holder))
                                         if holder else "")
        elif e["type"] == "unused_field":
            pass  # the message says it all; the value is in it
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{prefix}.{loc}: {msg}")
    return "\n".join(lines)


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
        raise SpecError(format_validation_error(e, prefix=source)) from None


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently).  Keys merged in with ``<<:`` may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen:
                    raise DuplicateKeyError(key, line, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def loads_json_unique(text: str) -> Any:
    """``json.loads``, except that a key given twice in one object is a ValueError."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k!r}; each field may be given once")
            out[k] = v
        return out
    return json.loads(text, object_pairs_hook=pairs)


def load_spec(path: str | os.PathLike | None) -> BenchmarkSpec:
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
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except DuplicateKeyError as e:
        raise SpecError(f"{p.name}: duplicate key {e.key!r} at line {e.line} (first at line "
                        f"{e.first_line}); each field may be given once") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise SpecError(f"spec file {str(p)!r} is not valid YAML{at}") from None
    return parse_spec(data, source=p.name)
