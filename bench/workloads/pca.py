"""PCA by a distributed covariance: each chunk returns its row count, column sums and Gram
matrix XᵀX; the driver sums them, forms the covariance and takes its eigen-decomposition.
Quality figure: the explained-variance ratio of the first ``n_components`` components, which must
equal scikit-learn's full-SVD PCA to numerical precision.
"""
from __future__ import annotations

import numpy as np

from .base import Outcome, Workload, chunks


def gram_chunk(bounds: tuple[int, int], X: np.ndarray):
    lo, hi = bounds
    part = X[lo:hi]
    return len(part), part.sum(axis=0), part.T @ part


class Pca(Workload):
    name = "pca"
    quality_metric = "explained_variance"
    tolerance = {"explained_variance": (1e-6, 0.0)}

    def distribute(self, engine, data, params):
        X = data.X
        if params["n_components"] > X.shape[1]:
            from ..errors import UsageError

            raise UsageError(
                f"workloads.pca.params.n_components: {params['n_components']} is more than the "
                f"dataset's {X.shape[1]} features"
            )
        return {"X": engine.put(X), "n": len(X)}

    def run_local(self, engine, state, params) -> Outcome:
        from sklearn.decomposition import PCA

        p = PCA(n_components=params["n_components"], svd_solver="full").fit(state["X"])
        return Outcome({"explained_variance": float(p.explained_variance_ratio_.sum())},
                       {"first_component_ratio": float(p.explained_variance_ratio_[0])})

    def run_distributed(self, engine, state, params) -> Outcome:
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
