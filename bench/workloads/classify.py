"""Classification: logistic regression (one-vs-rest) and a random forest.

Logistic regression: one binary L-BFGS fit per class, one task each; the driver stacks the
coefficients and predicts by the largest decision value: exactly scikit-learn's
``OneVsRestClassifier(LogisticRegression())``, so the accuracy is identical.
Random forest: the trees are split across ``parallelism`` tasks (each its own seed), the driver
merges the fitted trees into one forest and predicts; scikit-learn's ``n_jobs`` forest is the
baseline (a different random stream, so the accuracy agrees within a tolerance).
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.datasets import Dataset
from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload, accuracy, chunks


def fit_binary(cls: int, X: NDArray[np.float64], y: NDArray[np.int64],
               max_iter: int) -> tuple[NDArray[np.float64], float]:
    from sklearn.linear_model import LogisticRegression

    # Dask's deserialized arrays may sit at unaligned addresses (distributed 2026.8.0), and
    # OpenBLAS then takes other kernels: L-BFGS, far from converged on raw digits, ends
    # elsewhere (up to 0.08 apart in a coefficient, 0.6% in accuracy). An aligned copy makes
    # every framework compute what the single-process baseline computes.
    X = np.require(X, requirements=["A", "C"])
    m = LogisticRegression(max_iter=max_iter).fit(X, (y == cls).astype(int))
    return m.coef_[0], m.intercept_[0]


def fit_trees(job: tuple[int, int], X: NDArray[np.float64], y: NDArray[np.int64]) -> Any:
    """A fitted ``RandomForestClassifier`` of ``job`` = (trees, seed)."""
    from sklearn.ensemble import RandomForestClassifier

    n_trees, seed = job
    return RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1).fit(X, y)


class Classify(Workload):
    name = "classify"
    quality_metric = "accuracy"
    tolerance: ClassVar[Tolerance] = {"accuracy_logreg": (1e-9, 0.0),
                                      "accuracy_forest": (0.03, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        state = super().distribute(engine, data, params)
        state["classes"] = np.unique(data.y_train)
        state["X_test_local"] = data.X_test
        return state

    @staticmethod
    def _quality(q: dict[str, float]) -> dict[str, float]:
        q["accuracy"] = float(np.mean(list(q.values())))
        return q

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        q = {}
        X, y, Xt, yt = state["X_train"], state["y_train"], state["X_test"], state["y_test"]
        if params["model"] in ("logreg", "both"):
            m = OneVsRestClassifier(LogisticRegression(max_iter=params["max_iter"]),
                                    n_jobs=engine.parallelism)
            with engine.joblib():
                m.fit(X, y)
            q["accuracy_logreg"] = accuracy(yt, m.predict(Xt))
        if params["model"] in ("forest", "both"):
            f = RandomForestClassifier(n_estimators=params["n_estimators"],
                                       random_state=params["seed"], n_jobs=engine.parallelism)
            f.fit(X, y)
            q["accuracy_forest"] = accuracy(yt, f.predict(Xt))
        return Outcome(self._quality(q))

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        q, extra = {}, {}
        Xt, yt, classes = state["X_test_local"], state["y_test"], state["classes"]
        if params["model"] in ("logreg", "both"):
            fits = engine.map(fit_binary, list(classes), state["X_train"], state["y_train"],
                              params["max_iter"])
            W = np.stack([f[0] for f in fits])
            b = np.array([f[1] for f in fits])
            pred = classes[np.argmax(Xt @ W.T + b, axis=1)]
            q["accuracy_logreg"] = accuracy(yt, pred)
            extra["logreg_tasks"] = len(fits)
        if params["model"] in ("forest", "both"):
            parts = chunks(params["n_estimators"], engine.parallelism)
            jobs = [(hi - lo, params["seed"] + i) for i, (lo, hi) in enumerate(parts)]
            forests = engine.map(fit_trees, jobs, state["X_train"], state["y_train"])
            merged = copy.copy(forests[0])
            merged.estimators_ = [t for f in forests for t in f.estimators_]
            merged.n_estimators = len(merged.estimators_)
            q["accuracy_forest"] = accuracy(yt, merged.predict(Xt))
            extra["forest_tasks"] = len(jobs)
        return Outcome(self._quality(q), extra)
