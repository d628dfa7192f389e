"""PCA by a distributed covariance: each chunk returns its row count, column sums and Gram
matrix XᵀX; the driver sums them, forms the covariance and takes its eigen-decomposition.
Quality figure: the explained-variance ratio of the first ``n_components`` components, which must
equal scikit-learn's full-SVD PCA to numerical precision.

Partitioned mode (``dataset.name: parquet``): one task per partition reads its own file's
feature columns and returns the same three figures; the driver never holds the data (on the
``local`` baseline the threads of this process read them).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.data import PartitionedData, data_record, read_partitions, spilled
from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.errors import UsageError

from .base import Outcome, Params, State, Tolerance, Workload, chunks

if TYPE_CHECKING:
    import pyarrow as pa


def gram_chunk(bounds: tuple[int, int], X: NDArray[np.float64]
               ) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    lo, hi = bounds
    part = X[lo:hi]
    return len(part), part.sum(axis=0), part.T @ part


def gram_table(table: pa.Table) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    """:func:`gram_chunk`'s figures of one partition's feature columns."""
    X = np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float64)
    return gram_chunk((0, len(X)), X)


def feature_columns(data: PartitionedData, workload: str) -> list[str]:
    """The float feature columns of a classification/blobs dataset (not its label)."""
    label = data.manifest.get("label")
    if label is None:
        raise UsageError(f"workloads.{workload}: needs numeric features and a label (dataset "
                         f"kind classification or blobs); {data.uri} is {data.kind}")
    return [f["name"] for f in data.manifest["schema"] if f["name"] != label]


class Pca(Workload):
    name = "pca"
    quality_metric = "explained_variance"
    tolerance: ClassVar[Tolerance] = {"explained_variance": (1e-6, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        X = data.X
        if params["n_components"] > X.shape[1]:
            from bench.errors import UsageError

            raise UsageError(
                f"workloads.pca.params.n_components: {params['n_components']} is more than the "
                f"dataset's {X.shape[1]} features"
            )
        return {"X": engine.put(X), "n": len(X)}

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        features = feature_columns(data, self.name)
        if params["n_components"] > len(features):
            raise UsageError(f"workloads.pca.params.n_components: {params['n_components']} is "
                             f"more than the dataset's {len(features)} features")
        return {"data": data, "features": features}

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        if "data" not in state:
            return super().run(engine, state, params)
        read = read_partitions(engine, state["data"], gram_table, columns=state["features"])
        out = self._combine(read.results, params)
        out.extra["chunks"] = len(read.results)
        out.data = data_record(state["data"], read.reads, spilled(engine))
        return out

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from sklearn.decomposition import PCA

        p = PCA(n_components=params["n_components"], svd_solver="full").fit(state["X"])
        return Outcome({"explained_variance": float(p.explained_variance_ratio_.sum())},
                       {"first_component_ratio": float(p.explained_variance_ratio_[0])})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        parts = chunks(state["n"], engine.parallelism * params["chunks_per_worker"])
        out = self._combine(engine.map(gram_chunk, parts, state["X"]), params)
        out.extra["chunks"] = len(parts)
        return out

    @staticmethod
    def _combine(out: list[tuple[int, NDArray[np.float64], NDArray[np.float64]]],
                 params: Params) -> Outcome:
        n = sum(o[0] for o in out)
        s = sum(o[1] for o in out)
        gram = sum(o[2] for o in out)
        mean = s / n
        cov = (gram - n * np.outer(mean, mean)) / (n - 1)
        eig = np.linalg.eigvalsh(cov)[::-1]
        eig = np.clip(eig, 0, None)
        ratio = eig / eig.sum()
        k = params["n_components"]
        return Outcome({"explained_variance": float(ratio[:k].sum())},
                       {"first_component_ratio": float(ratio[0])})
