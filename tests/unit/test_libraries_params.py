"""The libraries tier's train and tune workloads: strict parameters, data checks before any
cluster starts, and a missing library reported as one line naming the package."""
from __future__ import annotations

import numpy as np
import pytest

from bench.datasets import Dataset
from bench.errors import RunError, UsageError
from bench.params import WORKLOADS, TrainParams
from bench.runner import check_workloads
from bench.spec import parse_spec
from bench.spec_errors import SpecError


def test_train_and_tune_are_opt_in_libraries_workloads():
    assert WORKLOADS["train"].tier == WORKLOADS["tune"].tier == "libraries"
    assert not WORKLOADS["train"].default and not WORKLOADS["tune"].default
    assert WORKLOADS["train"].needs_torch and not WORKLOADS["tune"].needs_torch
    assert TrainParams().model_dump()["batch_size"] == 64


@pytest.mark.parametrize(("params", "field"), [
    ({"batch_size": True}, "batch_size"),  # strict: YAML's true is no count
    ({"steps": 0}, "steps"),
    ({"arch": "vgg"}, "arch"),
    ({"momentum": 1.0}, "momentum"),
    ({"target_accuracy": 1.5}, "target_accuracy"),
    ({"batchsize": 8}, "batchsize"),  # a typo is an error, not ignored
])
def test_train_params_are_strict(params, field):
    with pytest.raises(SpecError, match=rf"workloads\.0\.params\.{field}"):
        parse_spec({"workloads": [{"name": "train", "params": params}]})


def test_data_checks_name_the_field():
    data = Dataset(X_train=np.zeros((6, 4)), y_train=np.array([0, 0, 0, 0, 1, 1]),
                   X_test=np.zeros((1, 4)), y_test=np.array([0]))
    for workload, message in (
            ({"name": "train"}, ("workloads.0.name: train needs 8x8 images (64 features, e.g. "
                                 "the digits dataset); this dataset has 4")),
            ({"name": "tune", "params": {"cv": 3}},
             "workloads.0.params.cv: 3 folds but the smallest class has only 2 training rows")):
        with pytest.raises(UsageError) as e:
            check_workloads(parse_spec({"workloads": [workload]}), data)
        assert str(e.value) == message
    images = Dataset(X_train=np.zeros((6, 64)), y_train=np.zeros(6), X_test=np.zeros((1, 64)),
                     y_test=np.zeros(1))
    with pytest.raises(UsageError, match=r"^workloads\.0\.params\.batch_size: 7 is more than "
                                         r"the 6 training rows$"):
        check_workloads(parse_spec({"workloads": [{"name": "train",
                                                   "params": {"batch_size": 7}}]}), images)


def test_a_missing_library_is_one_line_naming_the_package(monkeypatch):
    import sys

    from bench.workloads.libraries.base import require

    monkeypatch.setitem(sys.modules, "dask_ml.model_selection", None)
    with pytest.raises(RunError) as e:
        require("dask_ml.model_selection", "dask-ml", "tune on dask")
    assert str(e.value).startswith("tune on dask needs the Python package 'dask-ml': "
                                   "dask_ml.model_selection cannot be imported here")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("workload", "message"), [
    ("train", "train runs on local, ray (Ray Train) and dask (DDP on the workers), not on local"),
    ("tune", "tune runs on local, ray (Ray Tune) and dask (Dask-ML), not on local"),
], ids=["train", "tune"])
def test_train_and_tune_run_only_on_ray_and_dask_clusters(workload, message):
    from bench.engines.local import LocalEngine
    from bench.workloads import get_workload
    from bench.workloads.libraries.base import dask_client

    engine = LocalEngine(1)  # not started: nothing runs before the framework is checked
    with pytest.raises(RunError) as e:
        get_workload(workload).run_distributed(engine, {}, {})
    assert str(e.value) == message
    with pytest.raises(RunError, match=rf"^{workload} on dask: the Dask engine is not connected$"):
        dask_client(engine, f"{workload} on dask")
