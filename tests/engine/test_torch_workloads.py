"""The torch workloads (cnn, resnet18) and their helpers, without any cluster.

The data-parallel path is exercised for real through ``LocalEngine(2)``, whose ``map`` runs the
shard tasks on a thread pool: sharding, weight shipping, averaging and distributed scoring are
the same code the Ray and Dask engines run.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.datasets import load_dataset  # noqa: E402
from bench.engines.local import LocalEngine  # noqa: E402
from bench.params import CnnParams, ResNet18Params  # noqa: E402
from bench.spec import DatasetSpec  # noqa: E402
from bench.workloads import torchnet as tn  # noqa: E402
from bench.workloads.cnn import Cnn  # noqa: E402
from bench.workloads.resnet18 import ResNet18  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return load_dataset(DatasetSpec())


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def engine1():
    e = LocalEngine(1)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def engine2():
    e = LocalEngine(2)
    e.start()
    yield e
    e.stop()


def _run(workload, engine, data, params, distributed=False):
    state = workload.distribute(engine, data, params)
    try:
        if distributed:
            return workload.run_distributed(engine, state, params)
        return workload.run(engine, state, params)
    finally:
        workload.release(engine, state)


# -- models ---------------------------------------------------------------------------------
def test_resnet18_parameter_count_and_output_shape():
    model = tn.build_model("resnet18", 64, 0)
    n = tn.param_count(model)
    # torchvision's resnet18 has 11,689,512 parameters: minus its 1000-class fc (513,000) plus
    # a 10-class fc (5,130), minus the 7×7×3×64 stem (9,408) plus a 3×3×1×64 one (576).
    assert n == 11_689_512 - 513_000 + 5_130 - 9_408 + 576
    assert 11_100_000 <= n <= 11_300_000
    model.eval()
    with torch.no_grad():
        out = model(tn.prep(np.zeros((5, 64))))
    assert out.shape == (5, 10)


def test_cnn_output_shape():
    model = tn.build_model("cnn", seed=0)
    with torch.no_grad():
        out = model(tn.prep(np.full((3, 64), 16.0)))
    assert out.shape == (3, 10)


def test_prep_shapes_and_scales():
    X = np.arange(2 * 64, dtype=np.float64).reshape(2, 64) % 17
    t = tn.prep(X)
    assert t.shape == (2, 1, 8, 8) and t.dtype == torch.float32
    assert float(t.max()) == 1.0
    assert np.allclose(t.numpy().reshape(2, 64), X / 16)


def test_init_is_deterministic_by_seed():
    a = tn.get_flat(tn.build_model("resnet18", 8, 3))
    b = tn.get_flat(tn.build_model("resnet18", 8, 3))
    c = tn.get_flat(tn.build_model("resnet18", 8, 4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# -- weights --------------------------------------------------------------------------------
def test_weights_round_trip_including_batchnorm_buffers():
    src = tn.build_model("resnet18", 8, 1)
    # Move the BatchNorm running statistics away from their initial values.
    src.train()
    with torch.no_grad():
        src(tn.prep(np.random.default_rng(0).uniform(0, 16, (16, 64))))
    names = list(src.state_dict())
    assert any(k.endswith("running_mean") for k in names)
    assert any(k.endswith("num_batches_tracked") for k in names)
    for getter in (tn.get_weights, tn.get_flat):
        dst = tn.build_model("resnet18", 8, 2)
        tn.set_weights(dst, getter(src))
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), k
    dst = tn.build_model("resnet18", 8, 2)
    tn.set_state(dst, tn.get_state(src))
    assert np.array_equal(tn.get_flat(dst), tn.get_flat(src))


def test_set_weights_rejects_wrong_shapes():
    model = tn.build_model("cnn")
    with pytest.raises(ValueError, match="expected a flat vector of"):
        tn.set_weights(model, tn.get_flat(model)[:-1])
    with pytest.raises(ValueError, match="weight arrays, got"):
        tn.set_weights(model, tn.get_weights(model)[:-1])


def test_averaging_identical_weights_is_identity():
    model = tn.build_model("resnet18", 8, 0)
    flat = tn.get_flat(model)
    assert np.array_equal(tn.average_weights([flat, flat.copy(), flat.copy()], [3, 5, 7]), flat)
    lst = tn.get_weights(model)
    avg = tn.average_weights([lst, [a.copy() for a in lst]], [10, 1])
    assert len(avg) == len(lst)
    for a, b in zip(avg, lst, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_averaging_is_sample_weighted():
    a, b = np.zeros(4, np.float32), np.ones(4, np.float32)
    assert np.allclose(tn.average_weights([a, b], [1, 3]), 0.75)
    assert np.allclose(tn.average_weights([a, b]), 0.5)


# -- the worker task ------------------------------------------------------------------------
def _spec(arch="cnn", width=0, **kw):
    spec = {"arch": arch, "width": width, "lr": 0.1, "seed": 0, "local_steps": 3,
            "batch_size": 16, "round": 2}
    spec.update(kw)
    return spec


@pytest.mark.parametrize(("arch", "width"), [("cnn", 0), ("resnet18", 8)])
def test_train_shard_is_deterministic(data, arch, width):
    torch.set_num_threads(1)
    w0 = tn.get_flat(tn.build_model(arch, width, 0))
    spec = _spec(arch, width)
    a = tn.train_shard((100, 400), data.X_train, data.y_train, w0, spec)
    b = tn.train_shard((100, 400), data.X_train, data.y_train, w0.copy(), dict(spec))
    assert np.array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2] == b[2] == 3 * 16
    assert math.isfinite(a[1]) and a[1] > 0
    assert not np.array_equal(a[0], w0)  # it did train
    # Another round draws other batches.
    c = tn.train_shard((100, 400), data.X_train, data.y_train, w0, {**spec, "round": 3})
    assert not np.array_equal(a[0], c[0])


def test_train_shard_returns_weights_in_the_form_received(data):
    model = tn.build_model("cnn")
    new, _, n = tn.train_shard((0, 96), data.X_train, data.y_train, tn.get_weights(model), _spec())
    assert isinstance(new, list) and len(new) == len(model.state_dict()) and n == 3 * 16


def test_rounds_of_one_shard_equal_one_uninterrupted_run(data):
    """Round r takes steps r·k .. of the same pass sequence: training in rounds of k steps with
    one shard is exactly plain SGD (the local baseline's algorithm)."""
    torch.set_num_threads(1)
    lo, hi, k = 0, 200, 3
    w = tn.get_flat(tn.build_model("cnn", seed=0))
    for r in range(4):  # 12 steps with batch 16 over 200 rows: crosses a pass boundary
        w, _, _ = tn.train_shard((lo, hi), data.X_train, data.y_train, w,
                                 _spec(local_steps=k, round=r))
    model = tn.build_model("cnn", seed=0)
    tn.sgd_steps(model, tn.prep(data.X_train[lo:hi]), tn.labels(data.y_train[lo:hi]), 0, 4 * k,
                 16, 0.1, 0, lo)
    assert np.allclose(w, tn.get_flat(model), atol=1e-6)


def test_evaluate(data):
    model = tn.build_model("cnn")
    loss, acc = tn.evaluate(model, data.X_test, data.y_test)
    assert math.isfinite(loss) and 0.0 <= acc <= 1.0


# -- the workloads ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_local(data):
    engine = LocalEngine(1)
    engine.start()
    try:
        return _run(Cnn(), engine, data, CnnParams().model_dump())
    finally:
        engine.stop()


def test_cnn_local_baseline(cnn_local):
    assert cnn_local.quality["accuracy"] > 0.9
    assert math.isfinite(cnn_local.quality["loss"])
    assert cnn_local.extra["samples_per_s"] > 0
    assert cnn_local.extra["params"] == tn.param_count(tn.build_model("cnn"))


def test_cnn_distributed_two_shards_matches_local(data, engine2, cnn_local):
    params = CnnParams().model_dump()
    out = _run(Cnn(), engine2, data, params, distributed=True)
    assert out.extra["shards"] == 2
    shard = math.ceil(len(data.X_train) / 2)
    assert out.extra["rounds"] == math.ceil(
        params["epochs"] * math.ceil(shard / params["batch_size"]) / params["local_steps"])
    assert out.quality["accuracy"] > 0.9
    assert Cnn.matches(out.quality, cnn_local.quality) == {"accuracy": True}
    assert out.extra["samples_per_s"] > 0
    assert engine2.tasks >= 2 * out.extra["rounds"]


def test_cnn_distributed_is_reproducible(data, engine2):
    params = CnnParams(epochs=2).model_dump()
    a = _run(Cnn(), engine2, data, params, distributed=True)
    b = _run(Cnn(), engine2, data, params, distributed=True)
    assert a.quality == b.quality


def test_resnet18_small_runs_local_and_distributed(data, engine1, engine2):
    params = ResNet18Params(width=16, steps=3, batch_size=16).model_dump()
    local = _run(ResNet18(), engine1, data, params)
    dist = _run(ResNet18(), engine2, data, params, distributed=True)
    for out in (local, dist):
        assert math.isfinite(out.quality["loss"])
        assert 0.0 <= out.quality["accuracy"] <= 1.0
        assert out.extra["samples_per_s"] > 0
        assert out.extra["rounds"] == 3
        assert out.extra["params"] == tn.param_count(tn.build_model("resnet18", 16))
    assert dist.extra["shards"] == 2
    # Fairness: the same samples per round as a distributed run with the engine's parallelism.
    assert local.extra["batch"] == 16 * engine1.parallelism
    assert dist.extra["batch"] == 16 * 2


def test_workload_metadata():
    assert Cnn.name == "cnn" and Cnn.quality_metric == "accuracy"
    assert ResNet18.name == "resnet18" and ResNet18.quality_metric == "accuracy"
    assert set(Cnn.tolerance) == {"accuracy"} and set(ResNet18.tolerance) == {"accuracy"}
    from bench.workloads import get_workload

    assert isinstance(get_workload("cnn"), Cnn)
    assert isinstance(get_workload("resnet18"), ResNet18)
