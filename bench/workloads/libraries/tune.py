"""``tune``: a hyperparameter grid search over an RBF SVC (C × gamma) on the training rows.

Ray: Ray Tune's ``Tuner`` with ``tune.grid_search`` on both axes, one trial per grid point
(default resources: one CPU per trial); each trial cross-validates its point.  Dask: Dask-ML's
``GridSearchCV`` on the Dask cluster (``scheduler=`` the engine's client), which builds one
graph of every (point, fold) fit.  Local baseline: scikit-learn's ``GridSearchCV`` with the
engine's threads.  All three get the same folds, computed once (``StratifiedKFold`` without
shuffling, passed as explicit index pairs), so the best mean cross-validation accuracy is the
same number everywhere: that is the quality figure, with ``trials_per_s`` (grid points per
second) beside it.

Dask-ML's ``HyperbandSearchCV`` is not offered: with Dask 2026.8.0 and dask-ml 2025.1.0 it fails
inside its own ``_incremental._fit`` (``dask.persist`` under its asynchronous client:
"Attempting to use an asynchronous Client in a synchronous context of `dask.compute`").
"""
from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.errors import RunError
from bench.workloads.base import Outcome, Params, State
from bench.workloads.gridsearch import GridSearch, _grid, cv_folds, fit_score

from .base import dask_client, dispatch, require, scratch_dir

Folds = list[tuple[np.ndarray, np.ndarray]]


def cv_score(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: Folds) -> float:
    """Mean accuracy of ``SVC(C, gamma)`` over ``folds``, in fold order (as GridSearchCV)."""
    point = (config["C"], config["gamma"])
    return float(np.mean([fit_score((point, tr, te), X, y) for tr, te in folds]))


def ray_trial(config: dict[str, Any], X: np.ndarray, y: np.ndarray, folds: Folds
              ) -> dict[str, float]:
    """A Ray Tune function trainable: one grid point, its mean CV score as the result."""
    return {"score": cv_score(config, X, y, folds)}


class Tune(GridSearch):
    """The core tier's grid search (its quality figure, tolerance, grid and folds) run by each
    framework's own search library; the data stays on the driver (the libraries ship it)."""

    name = "tune"

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        return {"X": data.X_train, "y": data.y_train, "folds": cv_folds(data, params)}

    def release(self, engine: Engine, state: State) -> None:
        pass

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import SVC

        t0 = time.perf_counter()
        with engine.joblib():
            gs = GridSearchCV(SVC(), _grid(params), cv=state["folds"],
                              n_jobs=engine.parallelism, refit=False).fit(state["X"], state["y"])
        return _from_cv_results(gs.cv_results_, params, time.perf_counter() - t0)

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        return dispatch(self.name, engine, state, params, ray=("Ray Tune", _ray),
                        dask=("Dask-ML", _dask))


def _outcome(scores: list[tuple[float, dict[str, Any]]], params: Params,
             seconds: float) -> Outcome:
    best_score, best_params = max(scores, key=lambda s: s[0])
    trials = len(scores)
    return Outcome({"best_score": float(best_score)},
                   {"best_params": best_params, "trials": trials, "fits": trials * params["cv"],
                    "trials_per_s": trials / max(seconds, 1e-9)})


def _from_cv_results(res: dict[str, Any], params: Params, seconds: float) -> Outcome:
    return _outcome([(float(s), {"C": float(p["C"]), "gamma": float(p["gamma"])})
                     for s, p in zip(res["mean_test_score"], res["params"], strict=True)],
                    params, seconds)


def _ray(engine: Engine, state: State, params: Params) -> Outcome:
    require("ray.tune", "ray[tune]", "tune on ray")
    from ray import tune

    t0 = time.perf_counter()
    with scratch_dir("tb-tune-") as storage:
        trainable = tune.with_parameters(ray_trial, X=state["X"], y=state["y"],
                                         folds=state["folds"])
        tuner = tune.Tuner(
            trainable,
            param_space={"C": tune.grid_search(list(params["C"])),
                         "gamma": tune.grid_search(list(params["gamma"]))},
            # Trials reuse their actors, as Dask's reuse its worker processes: the figure is
            # the search, not a process start per grid point.
            tune_config=tune.TuneConfig(metric="score", mode="max", reuse_actors=True),
            run_config=tune.RunConfig(name=f"tune-{uuid.uuid4().hex[:8]}",
                                      storage_path=storage, verbose=0))
        grid = tuner.fit()
    seconds = time.perf_counter() - t0
    results = [grid[i] for i in range(len(grid))]
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RunError(f"tune on ray: {len(errors)} trial(s) failed, first: {errors[0]!r}")
    engine.tasks += len(results)
    points = [(dict(r.metrics or {}), dict(r.config or {})) for r in results]
    return _outcome([(float(m["score"]), {"C": float(c["C"]), "gamma": float(c["gamma"])})
                     for m, c in points], params, seconds)


def _dask(engine: Engine, state: State, params: Params) -> Outcome:
    dms = require("dask_ml.model_selection", "dask-ml", "tune on dask")
    from sklearn.svm import SVC

    client = dask_client(engine, "tune on dask")
    t0 = time.perf_counter()
    # Dask-ML collects its futures with as_completed, which needs the client as the current
    # one (dask_ml/model_selection/_search.py, GridSearchCV.fit).
    with client.as_current():
        gs = dms.GridSearchCV(SVC(), _grid(params), cv=state["folds"], refit=False,
                              scheduler=client).fit(state["X"], state["y"])
    seconds = time.perf_counter() - t0
    out = _from_cv_results(gs.cv_results_, params, seconds)
    engine.tasks += out.extra["fits"]
    return out
