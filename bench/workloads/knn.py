"""KNN classification: brute-force k-nearest neighbours, test split predicted in chunks.

Every framework runs the same scikit-learn estimator (``algorithm="brute"``) on the same training
set; the distributed versions split the test rows into ``parallelism × chunks_per_worker`` chunks,
one task each, with the training data placed in the cluster once.  Predictions are therefore
identical to the baseline's and so is the accuracy.

Partitioned mode (``dataset.name: parquet``, kind ``classification`` or ``blobs``): the dataset's
first ``train_partitions`` partitions are the training set, the others the query points.  The
training set is what every KNN task needs: ``distribute`` has tasks read those partitions, and
the driver broadcasts their features and labels once (``Engine.put``; its size is
``extra.broadcast_bytes``); then every run is one task per query partition that reads its own
file and returns only its count of correct predictions.  The driver holds the training set and
counts, never the queries (on the ``local`` baseline the threads of this process read them);
the accuracy equals the baseline's, which predicts the same partitions from the same training set.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.data import PartitionedData, data_record, read_partitions, spilled
from bench.data.readers import read_partitions_with
from bench.engines.base import Engine
from bench.errors import UsageError

from .base import Outcome, Params, State, Tolerance, Workload, accuracy, chunks
from .pca import feature_columns

if TYPE_CHECKING:
    import pyarrow as pa


def _fit(X_train: NDArray[np.float64], y_train: NDArray[np.int64], k: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X_train, y_train)


def predict_chunk(bounds: tuple[int, int], X_train: NDArray[np.float64],
                  y_train: NDArray[np.int64], X_test: NDArray[np.float64],
                  k: int) -> NDArray[np.int64]:
    lo, hi = bounds
    pred: NDArray[np.int64] = _fit(X_train, y_train, k).predict(X_test[lo:hi])
    return pred


def labelled_table(table: pa.Table, label: str
                   ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """One partition's features (float64, in schema order) and labels."""
    X = np.column_stack([table[c].to_numpy() for c in table.column_names if c != label])
    return X.astype(np.float64), table[label].to_numpy().astype(np.int64)


def correct_in_table(table: pa.Table, X_train: NDArray[np.float64],
                     y_train: NDArray[np.int64], label: str, k: int) -> tuple[int, int]:
    """(correct predictions, rows) of one query partition against the training set."""
    X, y = labelled_table(table, label)
    pred = _fit(X_train, y_train, k).predict(X)
    return int(np.sum(pred == y)), len(y)


class Knn(Workload):
    name = "knn"
    quality_metric = "accuracy"
    tolerance: ClassVar[Tolerance] = {"accuracy": (1e-9, 0.0)}

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        feature_columns(data, self.name)  # a labelled dataset, else one line
        label = str(data.manifest["label"])
        train = params["train_partitions"]
        nparts = len(data.partitions)
        if train >= nparts:
            raise UsageError(f"workloads.knn.params.train_partitions: {train} leaves no query "
                             f"partition; the dataset has {nparts} (expected at most "
                             f"{nparts - 1})")
        read = read_partitions(engine, data, partial(labelled_table, label=label),
                               indices=range(train))
        X_train = np.concatenate([r[0] for r in read.results])
        y_train = np.concatenate([r[1] for r in read.results])
        if params["n_neighbors"] > len(X_train):
            raise UsageError(f"workloads.knn.params.n_neighbors: {params['n_neighbors']} is "
                             f"more than the {len(X_train)} training rows (the first {train} "
                             "partition(s))")
        return {"data": data, "label": label, "queries": list(range(train, nparts)),
                "X_train": engine.put(X_train), "y_train": engine.put(y_train),
                "train": {"train_partitions": train, "train_rows": len(X_train),
                          "train_bytes_read": sum(r["bytes"] for r in read.reads),
                          "broadcast_bytes": int(X_train.nbytes + y_train.nbytes)}}

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        if "data" not in state:
            return super().run(engine, state, params)
        read = read_partitions_with(engine, state["data"], correct_in_table, state["X_train"],
                                    state["y_train"], state["label"], params["n_neighbors"],
                                    indices=state["queries"])
        correct = sum(r[0] for r in read.results)
        rows = sum(r[1] for r in read.results)
        out = Outcome({"accuracy": correct / rows},
                      {"chunks": len(read.results), "query_rows": rows, **state["train"]})
        out.data = data_record(state["data"], read.reads, spilled(engine))
        return out

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        model = _fit(state["X_train"], state["y_train"], params["n_neighbors"])
        pred = model.predict(state["X_test"])
        return Outcome({"accuracy": accuracy(state["y_test"], pred)}, {"chunks": 1})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        parts = chunks(state["n_test"], engine.parallelism * params["chunks_per_worker"])
        preds = engine.map(predict_chunk, parts, state["X_train"], state["y_train"],
                           state["X_test"], params["n_neighbors"])
        pred = np.concatenate(preds)
        return Outcome({"accuracy": accuracy(state["y_test"], pred)}, {"chunks": len(parts)})
