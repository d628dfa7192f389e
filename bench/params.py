"""Parameter models for every workload.

Kept free of heavy imports (no numpy/sklearn/torch) so that the spec model, the CLI's argument
checking and, later, the operator's CRD generation can use them cheaply.  Every model forbids
unknown fields, so a typo in a parameter name is reported with the field's path instead of being
silently ignored.  Every model is strict: a count is an integer, so YAML's ``true`` or ``1.0``
where an integer is meant is an error instead of becoming 1.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Params(BaseModel):
    # strict: no bool -> int (true -> 1), float -> int (1.0 -> 1) or str -> number coercion.
    model_config = ConfigDict(extra="forbid", strict=True)


class KnnParams(_Params):
    n_neighbors: PositiveInt = 5
    chunks_per_worker: PositiveInt = 2
    """How many prediction chunks each worker gets (more chunks: better balance, more tasks)."""


class KMeansParams(_Params):
    n_clusters: PositiveInt = 10
    n_init: PositiveInt = 4
    max_iter: PositiveInt = 100
    strategy: Literal["inits", "lloyd"] = "inits"
    """``inits``: independent initialisations in parallel, best inertia wins (sklearn's n_init);
    ``lloyd``: one k-means++ init, then every Lloyd step is distributed over data chunks."""
    seed: int = 0


class PcaParams(_Params):
    n_components: PositiveInt = 10
    chunks_per_worker: PositiveInt = 2


class GridSearchParams(_Params):
    C: list[float] = Field(default_factory=lambda: [1.0, 10.0, 100.0], min_length=1)
    gamma: list[float] = Field(default_factory=lambda: [0.0005, 0.001, 0.005], min_length=1)
    cv: int = Field(default=3, ge=2)
    mode: Literal["tasks", "joblib"] = "tasks"
    """``tasks``: one native task per (candidate, fold); ``joblib``: GridSearchCV under the
    framework's joblib backend (Ray: ray.util.joblib, Dask: distributed's backend)."""


class ClassifyParams(_Params):
    model: Literal["logreg", "forest", "both"] = "both"
    n_estimators: PositiveInt = 64
    max_iter: PositiveInt = 500
    seed: int = 0


class CnnParams(_Params):
    epochs: PositiveInt = 20
    """Passes each worker makes over its shard (the local baseline: over the whole training set)."""
    batch_size: PositiveInt = 32
    """Per-worker batch size for each local step."""
    lr: float = Field(default=0.5, gt=0)
    """Peak learning rate of plain SGD, decayed to 0 by a cosine schedule over the run's steps."""
    local_steps: PositiveInt = 8
    """SGD steps each worker takes between weight averages (1 = synchronous gradient averaging)."""
    seed: int = 0


class ResNet18Params(_Params):
    steps: PositiveInt = 12
    """Number of synchronisation rounds (fixed work, so throughput is comparable)."""
    batch_size: PositiveInt = 32
    lr: float = Field(default=0.05, gt=0)
    local_steps: PositiveInt = 1
    width: PositiveInt = 64
    """Channels of the first stage (64 is the real ResNet-18; smaller for quick checks)."""
    seed: int = 0


class DataFrameParams(_Params):
    rows: PositiveInt = 200_000
    keys: PositiveInt = 1_000
    partitions_per_worker: PositiveInt = 4
    seed: int = 0


class TasksParams(_Params):
    count: PositiveInt = 1_000
    """Tiny tasks submitted asynchronously (throughput, per-task overhead)."""
    sync_count: PositiveInt = 100
    """Tiny tasks submitted one at a time, each awaited (round-trip latency)."""
    n: int = Field(default=20, ge=0, le=1000)
    """Each task computes factorial(n)."""


class NoopParams(_Params):
    pass


PARAMS: dict[str, type[_Params]] = {
    "knn": KnnParams,
    "kmeans": KMeansParams,
    "pca": PcaParams,
    "gridsearch": GridSearchParams,
    "classify": ClassifyParams,
    "cnn": CnnParams,
    "resnet18": ResNet18Params,
    "dataframe": DataFrameParams,
    "tasks": TasksParams,
    "noop": NoopParams,
}
WORKLOAD_NAMES = tuple(PARAMS)
DEFAULT_WORKLOADS = ("knn", "kmeans", "pca", "gridsearch", "classify", "cnn", "dataframe", "tasks")
