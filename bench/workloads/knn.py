"""KNN classification: brute-force k-nearest neighbours, test split predicted in chunks.

Every framework runs the same scikit-learn estimator (``algorithm="brute"``) on the same training
set; the distributed versions split the test rows into ``parallelism × chunks_per_worker`` chunks,
one task each, with the training data placed in the cluster once.  Predictions are therefore
identical to the baseline's and so is the accuracy.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload, accuracy, chunks


def _fit(X_train: NDArray[np.float64], y_train: NDArray[np.int64], k: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X_train, y_train)


def predict_chunk(bounds: tuple[int, int], X_train: NDArray[np.float64],
                  y_train: NDArray[np.int64], X_test: NDArray[np.float64],
                  k: int) -> NDArray[np.int64]:
    lo, hi = bounds
    pred: NDArray[np.int64] = _fit(X_train, y_train, k).predict(X_test[lo:hi])
    return pred


class Knn(Workload):
    name = "knn"
    quality_metric = "accuracy"
    tolerance: ClassVar[Tolerance] = {"accuracy": (1e-9, 0.0)}

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
