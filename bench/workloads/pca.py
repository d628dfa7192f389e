"""PCA by a distributed covariance: each chunk returns its row count, column sums and Gram
matrix XᵀX; the driver sums them, forms the covariance and takes its eigen-decomposition.
Quality figure: the explained-variance ratio of the first ``n_components`` components, which must
equal scikit-learn's full-SVD PCA to numerical precision.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.datasets import Dataset
from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload, chunks


def gram_chunk(bounds: tuple[int, int], X: NDArray[np.float64]
               ) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
    lo, hi = bounds
    part = X[lo:hi]
    return len(part), part.sum(axis=0), part.T @ part


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

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from sklearn.decomposition import PCA

        p = PCA(n_components=params["n_components"], svd_solver="full").fit(state["X"])
        return Outcome({"explained_variance": float(p.explained_variance_ratio_.sum())},
                       {"first_component_ratio": float(p.explained_variance_ratio_[0])})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        parts = chunks(state["n"], engine.parallelism * params["chunks_per_worker"])
        out = engine.map(gram_chunk, parts, state["X"])
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
                       {"first_component_ratio": float(ratio[0]), "chunks": len(parts)})
