"""Parameter models for every workload, and the workload registry (:data:`WORKLOADS`).

Kept free of heavy imports (no numpy/sklearn/torch) so that the spec model, the CLI's argument
checking and, later, the operator's CRD generation can use them cheaply.  Every model forbids
unknown fields, so a typo in a parameter name is reported with the field's path instead of being
silently ignored.  Every model is strict: a count is an integer, so YAML's ``true`` or ``1.0``
where an integer is meant is an error instead of becoming 1.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Params(BaseModel):
    # strict: no bool -> int (true -> 1), float -> int (1.0 -> 1) or str -> number coercion.
    model_config = ConfigDict(extra="forbid", strict=True)


class KnnParams(_Params):
    n_neighbors: PositiveInt = 5
    chunks_per_worker: PositiveInt = 2
    """How many prediction chunks each worker gets (more chunks: better balance, more tasks)."""
    train_partitions: PositiveInt = 1
    """Partitioned dataset only: its first this many partitions are the training set (read
    once and broadcast to every task), the others the query points, one task each."""


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


class _SvcGridParams(_Params):
    """An RBF SVC's grid (C × gamma) scored by ``cv``-fold cross-validation: ``gridsearch``
    and the libraries tier's ``tune``."""

    C: list[float] = Field(default_factory=lambda: [1.0, 10.0, 100.0], min_length=1)
    gamma: list[float] = Field(default_factory=lambda: [0.0005, 0.001, 0.005], min_length=1)
    cv: int = Field(default=3, ge=2)


class GridSearchParams(_SvcGridParams):
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


class TrainParams(_Params):
    arch: Literal["resnet18", "cnn"] = "resnet18"
    width: PositiveInt = 64
    """ResNet-18's first-stage channels (64: the real network); ignored by ``cnn``."""
    steps: PositiveInt = 50
    """Optimiser steps, the same on every framework (fixed work: samples/s are comparable)."""
    batch_size: PositiveInt = 64
    """The global batch: split evenly between the data-parallel ranks (one per worker)."""
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    target_accuracy: float = Field(default=0.9, gt=0, le=1)
    """Test accuracy whose first crossing gives ``time_to_target_s``."""
    eval_every: PositiveInt = 10
    """Rank 0 scores the test set every this many steps (and after the last)."""
    seed: int = 0


class TuneParams(_SvcGridParams):
    pass


class EtlParams(_Params):
    min_amount: float = 5.0
    """The filter: keep the transactions whose amount is above this (the generated amounts
    are log-normal around 20: 5.0 drops about 8% of them)."""
    output: str | None = None
    """Directory or ``s3://bucket/prefix`` the sorted table is written under (a fresh
    ``run-<id>`` per run, deleted after it is checked unless ``keep_output``); default: a
    temporary directory on this machine, which only a cluster this run started shares."""
    output_partitions: PositiveInt | None = None
    """Partitions of the aggregate and of the written table; default: the engine's
    parallelism."""
    keep_output: bool = False
    stages: bool = False
    """Materialize after each operation (Ray Data ``materialize``, Dask ``persist``) and
    record its seconds in ``extra.stage_seconds`` (read, filter, aggregate, join, sort,
    write) and the read's per-worker figures in ``data``; off: the fused pipeline, the
    headline measurement."""
    ray_shuffle: Literal["shuffle_v2", "hash_shuffle", "sort_shuffle_pull_based",
                         "sort_shuffle_push_based"] | None = None
    """Ray Data's shuffle for the group-by and the sort (``DataContext.shuffle_strategy``);
    default: Ray Data's own (``shuffle_v2`` in Ray 2.60). Its hash shuffles reserve ``memory``
    of twice a block per shuffle task, which a node with under about 1 GiB cannot grant:
    with 512 MiB workers the run stalls until its timeout. ``sort_shuffle_pull_based``
    reserves none. Dask ignores it."""


class XgboostParams(_Params):
    rounds: PositiveInt = 50
    """Boosting rounds (fixed work, so rounds/s is comparable)."""
    max_depth: PositiveInt = 6
    eta: float = Field(default=0.3, gt=0, le=1)
    max_bin: int = Field(default=256, ge=2)
    tree_method: Literal["hist", "approx"] = "hist"
    test_partitions: PositiveInt = 1
    """The dataset's last partitions held out for the final metric (never trained on)."""
    seed: int = 0


# --------------------------------------------------------------------------------------------
# The workload registry
# --------------------------------------------------------------------------------------------

class TrainingData(Protocol):
    """What a data check reads of a loaded ``bench.datasets.Dataset``."""

    @property
    def X_train(self) -> Any: ...

    @property
    def y_train(self) -> Any: ...


DataCheck = Callable[[dict[str, Any], TrainingData], "tuple[str, str] | None"]
"""A check that needs the loaded data, run before any cluster starts: given the workload's
params and the data, ``(field, problem)`` (``field`` below ``workloads.<i>``) or None."""


@dataclass(frozen=True)
class WorkloadInfo:
    """Everything the harness knows of a workload before importing its module."""

    params: type[_Params]
    """Its parameter model (validates the spec's ``params`` and fills defaults)."""
    impl: str
    """``module:Class`` under ``bench.workloads``; imported on first use."""
    checks: tuple[DataCheck, ...] = ()
    needs_torch: bool = False
    """Imports torch (only the full runner image has it)."""
    default: bool = True
    """Part of a spec that names no workloads."""
    dask_graphs: bool = False
    """On the Dask frameworks it builds Dask collections (``engine.dask_context()``) rather
    than the engine's ``put``/``map``/``joblib``: the only workloads Dask's single-machine
    schedulers (``dask-threads``, ``dask-processes``, ``dask-synchronous``) run."""
    packages: tuple[str, ...] = ()
    """Python packages (import names) it needs beyond the engine's own: a run whose
    environment lacks one fails before any cluster starts, with one line naming it."""
    partitioned: bool = False
    """Runs on a partitioned dataset (``dataset.name: parquet``, ``bench.data``): its tasks
    read their own partitions (``Workload.distribute_partitioned``); the others need the data
    in memory on the driver."""
    tier: Literal["core", "libraries"] = "core"
    """``core``: the same algorithm written on the engine vocabulary (put/map/joblib) for
    every framework, the controlled comparison; ``libraries``: each framework's own library
    (Ray Data/Train/Tune against Dask DataFrame, DDP on Dask workers, Dask-ML, xgboost.dask)."""


def _n_components(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
    features = data.X_train.shape[1]
    if params["n_components"] > features:
        return ("params.n_components",
                f"{params['n_components']} is more than the dataset's {features} features")
    return None


def _n_clusters(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
    if params["n_clusters"] > len(data.X_train):
        return ("params.n_clusters", "more clusters than rows")
    return None


def _cv_folds(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
    import numpy as np

    smallest = int(min(np.unique(data.y_train, return_counts=True)[1]))
    if params["cv"] > smallest:
        return ("params.cv",
                f"{params['cv']} folds but the smallest class has only {smallest} training rows")
    return None


def _images_8x8(name: str) -> DataCheck:
    def check(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
        features = data.X_train.shape[1]
        if features != 64:
            return ("name", (f"{name} needs 8x8 images (64 features, e.g. the digits "
                             f"dataset); this dataset has {features}"))
        return None
    return check


def _global_batch(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
    if params["batch_size"] > len(data.X_train):
        return ("params.batch_size",
                f"{params['batch_size']} is more than the {len(data.X_train)} training rows")
    return None
def _partitioned_only(kind: str) -> DataCheck:
    """For the workloads that read only a partitioned dataset: on in-memory data, say so
    (checks run only on in-memory data)."""
    def check(params: dict[str, Any], data: TrainingData) -> tuple[str, str] | None:
        message = (f"needs a partitioned {kind} dataset (dataset: {{name: parquet, uri: ...}}, "
                   f"written by testbed data make --kind {kind}); this dataset is in memory")
        return ("name", message)
    return check


WORKLOADS: dict[str, WorkloadInfo] = {
    "knn": WorkloadInfo(KnnParams, "knn:Knn", partitioned=True),
    "kmeans": WorkloadInfo(KMeansParams, "kmeans:KMeans", checks=(_n_clusters,),
                           partitioned=True),
    "pca": WorkloadInfo(PcaParams, "pca:Pca", checks=(_n_components,), partitioned=True),
    "gridsearch": WorkloadInfo(GridSearchParams, "gridsearch:GridSearch", checks=(_cv_folds,)),
    "classify": WorkloadInfo(ClassifyParams, "classify:Classify"),
    "cnn": WorkloadInfo(CnnParams, "cnn:Cnn", checks=(_images_8x8("cnn"),), needs_torch=True),
    "resnet18": WorkloadInfo(ResNet18Params, "resnet18:ResNet18",
                             checks=(_images_8x8("resnet18"),), needs_torch=True, default=False),
    "dataframe": WorkloadInfo(DataFrameParams, "dataframe:DataFrame", dask_graphs=True,
                              partitioned=True),
    "tasks": WorkloadInfo(TasksParams, "tasks:Tasks"),
    "noop": WorkloadInfo(NoopParams, "noop:Noop", default=False),
    "train": WorkloadInfo(TrainParams, "libraries.train:Train",
                          checks=(_images_8x8("train"), _global_batch), needs_torch=True,
                          default=False, tier="libraries"),
    "tune": WorkloadInfo(TuneParams, "libraries.tune:Tune", checks=(_cv_folds,), default=False,
                         tier="libraries"),
    "etl": WorkloadInfo(EtlParams, "libraries.etl:Etl", default=False, tier="libraries",
                        dask_graphs=True, packages=("pyarrow",), partitioned=True,
                        checks=(_partitioned_only("transactions"),)),
    "xgboost": WorkloadInfo(XgboostParams, "libraries.xgb:Xgboost", default=False,
                            tier="libraries", packages=("xgboost",), partitioned=True,
                            checks=(_partitioned_only("classification"),)),
}
"""Every workload, in display order."""

PARAMS: dict[str, type[_Params]] = {name: w.params for name, w in WORKLOADS.items()}
WORKLOAD_NAMES = tuple(WORKLOADS)
DEFAULT_WORKLOADS = tuple(name for name, w in WORKLOADS.items() if w.default)
