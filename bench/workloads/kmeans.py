"""K-Means clustering.

``strategy: inits`` (default): ``n_init`` independent k-means++ initialisations, one task each,
best inertia wins: what scikit-learn's ``n_init`` does sequentially.  ``strategy: lloyd``: one
k-means++ initialisation on the driver, then every Lloyd step is a map over data chunks (partial
sums and counts per cluster) and a reduce on the driver: the data-parallel form for data larger
than one worker.  Quality figure: inertia (lower is better), compared with scikit-learn's.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.datasets import Dataset
from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload, chunks


def fit_one(seed: int, X: NDArray[np.float64], n_clusters: int, max_iter: int) -> tuple[float, int]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=max_iter, random_state=seed).fit(X)
    return float(km.inertia_), int(km.n_iter_)


def lloyd_step(bounds: tuple[int, int], X: NDArray[np.float64], centers: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], NDArray[np.intp], float]:
    """Partial sums, counts and inertia of one chunk for the given centers."""
    from sklearn.metrics import pairwise_distances_argmin_min

    lo, hi = bounds
    part = X[lo:hi]
    labels, dist = pairwise_distances_argmin_min(part, centers)
    k = len(centers)
    sums = np.zeros_like(centers)
    np.add.at(sums, labels, part)
    counts = np.bincount(labels, minlength=k)
    return sums, counts, float(np.dot(dist, dist))


def initial_centers(X: NDArray[np.float64], n_clusters: int, seed: int) -> NDArray[np.float64]:
    from sklearn.cluster import kmeans_plusplus

    centers: NDArray[np.float64] = kmeans_plusplus(X, n_clusters, random_state=seed)[0]
    return centers


class KMeans(Workload):
    name = "kmeans"
    quality_metric = "inertia"
    higher_is_better = False
    tolerance: ClassVar[Tolerance] = {"inertia": (0.0, 0.02)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        X = data.X
        state = {"X": engine.put(X), "n": len(X)}
        if params["strategy"] == "lloyd":
            state["centers0"] = initial_centers(X, params["n_clusters"], params["seed"])
        return state

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from sklearn.cluster import KMeans as SkKMeans

        X = state["X"]
        if params["strategy"] == "lloyd":
            km = SkKMeans(params["n_clusters"], init=state["centers0"], n_init=1,
                          max_iter=params["max_iter"], algorithm="lloyd").fit(X)
        else:
            km = SkKMeans(params["n_clusters"], n_init=params["n_init"],
                          max_iter=params["max_iter"], random_state=params["seed"]).fit(X)
        return Outcome({"inertia": float(km.inertia_)}, {"iterations": int(km.n_iter_)})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        if params["strategy"] == "lloyd":
            return self._lloyd(engine, state, params)
        # Seeds as scikit-learn derives them for n_init from one random_state.
        rng = np.random.RandomState(params["seed"])
        drawn = rng.randint(np.iinfo(np.int32).max, size=params["n_init"])
        seeds = [int(s) for s in np.atleast_1d(drawn)]
        fits = engine.map(fit_one, seeds, state["X"], params["n_clusters"], params["max_iter"])
        best = min(fits)
        return Outcome({"inertia": best[0]}, {"iterations": best[1], "inits": len(fits)})

    def _lloyd(self, engine: Engine, state: State, params: Params) -> Outcome:
        centers = state["centers0"].copy()
        parts = chunks(state["n"], engine.parallelism)
        it = 0
        tol = 1e-4 * float(np.mean(np.var(centers, axis=0))) if len(centers) > 1 else 0.0
        while it < params["max_iter"]:
            it += 1
            out = engine.map(lloyd_step, parts, state["X"], centers)
            sums = sum(o[0] for o in out)
            counts = sum(o[1] for o in out)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol:
                break
        # Inertia of the final centers (one more pass, as scikit-learn reports it).
        inertia = sum(o[2] for o in engine.map(lloyd_step, parts, state["X"], centers))
        return Outcome({"inertia": float(inertia)}, {"iterations": it, "chunks": len(parts)})
