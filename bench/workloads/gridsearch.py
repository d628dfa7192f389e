"""Grid search over an RBF SVC with stratified k-fold cross-validation.

``mode: tasks`` (default): one native task per (candidate, fold), training data in the cluster
once, fold indices sent with each task.  ``mode: joblib``: scikit-learn's GridSearchCV under the
framework's joblib backend (Ray: ``ray.util.joblib``; Dask: distributed's ``dask`` backend).
Quality figure: the best mean cross-validation accuracy, identical to GridSearchCV's since the
folds (StratifiedKFold without shuffling) and the estimator are the same.
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from bench.datasets import Dataset
from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload


def _grid(params: Params) -> dict[str, list[Any]]:
    return {"C": list(params["C"]), "gamma": list(params["gamma"])}


FoldJob = tuple[tuple[float, float], NDArray[np.intp], NDArray[np.intp]]  # (C, gamma), folds


def fit_score(job: FoldJob, X: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    from sklearn.svm import SVC

    (C, gamma), train_idx, test_idx = job
    model = SVC(C=C, gamma=gamma).fit(X[train_idx], y[train_idx])
    return float(model.score(X[test_idx], y[test_idx]))


def cv_folds(data: Dataset, params: Params) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    """The (train, test) index pairs of ``StratifiedKFold(cv)`` (no shuffling: GridSearchCV's
    own for an integer ``cv``) over the training rows."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(params["cv"]).split(data.X_train, data.y_train))


class GridSearch(Workload):
    name = "gridsearch"
    quality_metric = "best_score"
    tolerance: ClassVar[Tolerance] = {"best_score": (1e-9, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        return {"X": engine.put(data.X_train), "y": engine.put(data.y_train),
                "X_local": data.X_train, "y_local": data.y_train,
                "folds": cv_folds(data, params)}

    def _search_cv(self, params: Params, n_jobs: int) -> Any:
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import SVC

        return GridSearchCV(SVC(), _grid(params), cv=params["cv"], n_jobs=n_jobs, refit=False)

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        with engine.joblib():
            gs = self._search_cv(params, engine.parallelism).fit(state["X_local"],
                                                                  state["y_local"])
        return Outcome({"best_score": float(gs.best_score_)},
                       {"best_params": gs.best_params_,
                        "fits": len(gs.cv_results_["params"]) * params["cv"]})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        if params["mode"] == "joblib":
            with engine.joblib():
                gs = self._search_cv(params, engine.parallelism).fit(state["X_local"],
                                                                      state["y_local"])
            fits = len(gs.cv_results_["params"]) * params["cv"]
            engine.tasks += fits  # one joblib task per fit, run by the framework's backend
            return Outcome({"best_score": float(gs.best_score_)},
                           {"best_params": gs.best_params_, "fits": fits, "mode": "joblib"})
        candidates = list(itertools.product(params["C"], params["gamma"]))
        jobs = [(c, tr, te) for c in candidates for tr, te in state["folds"]]
        scores = np.array(engine.map(fit_score, jobs, state["X"], state["y"]))
        means = scores.reshape(len(candidates), len(state["folds"])).mean(axis=1)
        best = int(np.argmax(means))  # first best, as GridSearchCV's rank 1
        C, gamma = candidates[best]
        return Outcome({"best_score": float(means[best])},
                       {"best_params": {"C": C, "gamma": gamma}, "fits": len(jobs),
                        "mode": "tasks"})

    def release(self, engine: Engine, state: State) -> None:
        engine.release(state["X"])
        engine.release(state["y"])
