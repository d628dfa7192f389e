"""KNN classification: brute-force k-nearest neighbours, test split predicted in chunks.

Every framework runs the same scikit-learn estimator (``algorithm="brute"``) on the same training
set; the distributed versions split the test rows into ``parallelism × chunks_per_worker`` chunks,
one task each, with the training data placed in the cluster once.  Predictions are therefore
identical to the baseline's and so is the accuracy.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Outcome, Workload, accuracy, chunks


def _fit(X_train: np.ndarray, y_train: np.ndarray, k: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X_train, y_train)


def predict_chunk(bounds: tuple[int, int], X_train: np.ndarray, y_train: np.ndarray,
                  X_test: np.ndarray, k: int) -> np.ndarray:
    lo, hi = bounds
    return _fit(X_train, y_train, k).predict(X_test[lo:hi])


class Knn(Workload):
    name = "knn"
    quality_metric = "accuracy"
    tolerance = {"accuracy": (1e-9, 0.0)}

    def run_local(self, engine, state, params) -> Outcome:
        model = _fit(state["X_train"], state["y_train"], params["n_neighbors"])
        pred = model.predict(state["X_test"])
        return Outcome({"accuracy": accuracy(state["y_test"], pred)}, {"chunks": 1})

    def run_distributed(self, engine, state, params) -> Outcome:
        parts = chunks(state["n_test"], engine.parallelism * params["chunks_per_worker"])
        preds = engine.map(predict_chunk, parts, state["X_train"], state["y_train"],
                           state["X_test"], params["n_neighbors"])
        pred = np.concatenate(preds)
        return Outcome({"accuracy": accuracy(state["y_test"], pred)}, {"chunks": len(parts)})
