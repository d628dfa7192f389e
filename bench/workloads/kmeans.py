"""K-Means clustering.

``strategy: inits`` (default): ``n_init`` independent k-means++ initialisations, one task each,
best inertia wins: what scikit-learn's ``n_init`` does sequentially.  ``strategy: lloyd``: one
k-means++ initialisation on the driver, then every Lloyd step is a map over data chunks (partial
sums and counts per cluster) and a reduce on the driver: the data-parallel form for data larger
than one worker.  Quality figure: inertia (lower is better), compared with scikit-learn's.

Partitioned mode (``dataset.name: parquet``, ``strategy: lloyd`` only): every task returns a
seeded sample of its own partition, k-means++ runs on the union of the samples on the driver,
then every Lloyd step is one task per partition that reads its own file; the driver holds
centres, sums and counts only (on the ``local`` baseline the threads of this process read).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.data import PartitionedData, data_record, read_partitions, spilled
from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.errors import UsageError

from .base import Outcome, Params, State, Tolerance, Workload, chunks
from .pca import feature_columns

if TYPE_CHECKING:
    import pyarrow as pa

SAMPLE_PER_CLUSTER = 20
"""Partitioned mode: rows each partition contributes to the k-means++ sample, per cluster."""


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


def _features(table: pa.Table) -> NDArray[np.float64]:
    return np.column_stack([c.to_numpy() for c in table.columns]).astype(np.float64)


def sample_table(table: pa.Table, rows: int, seed: int) -> NDArray[np.float64]:
    """A seeded sample of one partition's rows (all of them when it has fewer)."""
    X = _features(table)
    if len(X) <= rows:
        return X
    return X[np.random.default_rng(seed).choice(len(X), rows, replace=False)]


def lloyd_table(table: pa.Table, centers: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.intp], float]:
    """:func:`lloyd_step` of one partition's feature columns."""
    X = _features(table)
    return lloyd_step((0, len(X)), X, centers)


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

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        if params["strategy"] != "lloyd":
            raise UsageError("workloads.kmeans.params.strategy: a partitioned dataset needs "
                             "strategy: lloyd (the data-parallel form)")
        features = feature_columns(data, self.name)
        if params["n_clusters"] > int(data.manifest["rows"]):
            raise UsageError("workloads.kmeans.params.n_clusters: more clusters than rows")
        fn = partial(sample_table, rows=SAMPLE_PER_CLUSTER * params["n_clusters"],
                     seed=params["seed"])
        sample = np.concatenate(read_partitions(engine, data, fn, columns=features).results)
        return {"data": data, "features": features,
                "centers0": initial_centers(sample, params["n_clusters"], params["seed"])}

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        if "data" not in state:
            return super().run(engine, state, params)
        reads: list[dict[str, Any]] = []

        def step(centers: NDArray[np.float64]) -> list[Any]:
            read = read_partitions(engine, state["data"], partial(lloyd_table, centers=centers),
                                   columns=state["features"])
            reads.extend(read.reads)
            return read.results

        out = self._iterate(step, state["centers0"], params)
        out.data = data_record(state["data"], reads, spilled(engine))
        return out

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
        parts = chunks(state["n"], engine.parallelism)
        out = self._iterate(lambda centers: engine.map(lloyd_step, parts, state["X"], centers),
                            state["centers0"], params)
        out.extra["chunks"] = len(parts)
        return out

    @staticmethod
    def _iterate(step: Callable[[NDArray[np.float64]], list[Any]],
                 centers0: NDArray[np.float64], params: Params) -> Outcome:
        """Lloyd steps until the centres move less than scikit-learn's tolerance; ``step``
        maps one step over the data and returns each piece's (sums, counts, inertia)."""
        centers = centers0.copy()
        it = 0
        tol = 1e-4 * float(np.mean(np.var(centers, axis=0))) if len(centers) > 1 else 0.0
        while it < params["max_iter"]:
            it += 1
            out = step(centers)
            sums = sum(o[0] for o in out)
            counts = sum(o[1] for o in out)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol:
                break
        # Inertia of the final centers (one more pass, as scikit-learn reports it).
        inertia = sum(o[2] for o in step(centers))
        return Outcome({"inertia": float(inertia)}, {"iterations": it})
