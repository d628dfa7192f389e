"""The workload plug-in interface.

A workload is three steps, run by one harness (:mod:`bench.runner`):

``distribute(engine, data, params)``  once per trial, timed as the *distribute* phase: put the
                                      data into the cluster (object store / scatter / nothing);
``run(engine, state, params)``        the timed work, repeated; returns an :class:`Outcome`
                                      with a quality figure;
``release(engine, state)``            drop what ``distribute`` placed.

On the ``local`` engine ``run`` is the canonical single-process scikit-learn/torch/pandas
implementation with the engine's thread count: the baseline whose quality figure every framework
must reproduce within ``tolerance``.  On the other engines it is the framework's own parallel
version, written against the engine vocabulary (``put``/``map``/``joblib``/``dask_scheduler``),
whose implementations are each framework's idiomatic fast path.

Functions shipped to workers are module-level so that they pickle by reference.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from bench.data import PartitionedData
from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.frameworks import is_baseline

Params = dict[str, Any]  # a workload's parameters, as validated by bench.params
State = dict[str, Any]  # what distribute placed: handles from Engine.put and local values
Tolerance = dict[str, tuple[float, float]]  # per quality key: (absolute, relative)


@dataclass
class Outcome:
    quality: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    """On a partitioned dataset: what the run read (``bench.data.readers.data_record``)."""


class Workload:
    name: ClassVar[str]
    quality_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    # Allowed difference from the local baseline, per quality key: (absolute, relative).
    tolerance: ClassVar[Tolerance] = {}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        return {
            "X_train": engine.put(data.X_train),
            "y_train": engine.put(data.y_train),
            "X_test": engine.put(data.X_test),
            "y_test": data.y_test,
            "n_train": len(data.X_train),
            "n_test": len(data.X_test),
        }

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        """A partitioned dataset (``bench.data``): tell the tasks which partitions to read;
        only workloads registered ``partitioned`` (bench.params.WORKLOADS) get one."""
        raise NotImplementedError(f"{self.name} has no partitioned mode")

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        if is_baseline(engine.framework):
            return self.run_local(engine, state, params)
        return self.run_distributed(engine, state, params)

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        raise NotImplementedError

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        raise NotImplementedError

    def release(self, engine: Engine, state: State) -> None:
        if isinstance(state, dict):
            for v in state.values():
                if not isinstance(v, (int, float, str, np.ndarray)) and v is not None:
                    engine.release(v)

    @classmethod
    def matches(cls, quality: dict[str, float], baseline: dict[str, float]) -> dict[str, bool]:
        """Per quality key: is ``quality`` within tolerance of ``baseline``?"""
        out = {}
        for key, (absolute, relative) in cls.tolerance.items():
            if key not in quality or key not in baseline:
                continue
            a, b = quality[key], baseline[key]
            out[key] = abs(a - b) <= max(absolute, relative * abs(b))
        return out


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """Split range(n) into ``parts`` contiguous (lo, hi) slices of near-equal size."""
    parts = max(1, min(parts, n))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
