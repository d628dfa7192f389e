"""Engine integration: real local Ray, Dask and Dask-on-Ray clusters with two workers (the
tier's shared ``cluster``, tests/engine/conftest.py).

Every workload runs on every framework and its quality figure is compared with the
single-process scikit-learn/pandas/torch baseline on the same data.
"""
import os
import sys
import time

import pytest

from bench.datasets import load_dataset
from bench.engines import make_engine
from bench.spec import DatasetSpec, WorkloadSpec
from bench.workloads import get_workload

pytestmark = pytest.mark.slow

# Small parameters: the point is equal quality, not timing.
CASES = {
    "knn": {},
    "kmeans": {"n_init": 2},
    "kmeans-lloyd": {"strategy": "lloyd", "max_iter": 50},
    "pca": {},
    "gridsearch": {"C": [1.0, 10.0], "gamma": [0.001, 0.005]},
    "gridsearch-joblib": {"C": [1.0, 10.0], "gamma": [0.001], "mode": "joblib"},
    "classify": {"n_estimators": 16, "max_iter": 1000},
    "cnn": {"epochs": 8},  # fewer epochs: accuracy still unstable (3 epochs: 0.83 vs 0.88)
    "resnet18": {"steps": 2, "width": 8, "batch_size": 16},
    "dataframe": {"rows": 20_000, "keys": 100, "partitions_per_worker": 2},
    "tasks": {"count": 100, "sync_count": 10},
    "noop": {},
}


def _params(case):
    name = case.split("-")[0]
    return name, WorkloadSpec(name=name, params=CASES[case]).params


# Session-scoped, as the shared ``cluster`` (conftest.py) runs this module's tests in three runs,
# one per framework, between test_libraries.py's: set up once, not once per run.
@pytest.fixture(scope="session")
def digits():
    return load_dataset(DatasetSpec())


_BASELINES = {}


@pytest.fixture(scope="session")
def baseline(digits):
    """Quality of a case on the local single-thread baseline (computed once per case)."""
    def get(case):
        if case not in _BASELINES:
            engine = make_engine("local", 1)
            engine.start()
            try:
                name, params = _params(case)
                wl = get_workload(name)
                state = wl.distribute(engine, digits, params)
                _BASELINES[case] = wl.run(engine, state, params).quality
            finally:
                engine.stop()
        return _BASELINES[case]
    return get


def whoami(i, delay):
    time.sleep(delay)  # simulated work so both single-threaded workers get tasks
    return os.getpid()


def test_cluster_has_exactly_two_workers_and_spreads_tasks(cluster):
    assert cluster.started_cluster and cluster.startup_seconds > 0
    assert cluster.parallelism == 2
    assert len(cluster.worker_processes()) == 2
    pids = set(cluster.map(whoami, list(range(8)), 0.2))
    # Ray reuses one worker process per node; Dask has one process per worker.
    assert len(pids) >= 2


def test_sampling_measures_each_worker(cluster):
    cluster.start_sampling(0.05)
    cluster.map(whoami, list(range(4)), 0.2)
    workers = cluster.stop_sampling()
    assert len(workers) == 2
    for w in workers:
        assert w["samples"] >= 2 and w["rss_peak"] > 20 * 2**20, w


def test_put_once_use_many(cluster):
    import numpy as np

    from bench.workloads.pca import gram_chunk

    X = np.arange(40.0).reshape(10, 4)
    h = cluster.put(X)
    out = cluster.map(gram_chunk, [(0, 5), (5, 10)], h)
    assert sum(o[0] for o in out) == 10
    assert np.allclose(sum(o[2] for o in out), X.T @ X)
    cluster.release(h)


@pytest.mark.parametrize("case", list(CASES))
def test_workload_quality_matches_baseline(cluster, digits, baseline, case):
    name, params = _params(case)
    base = baseline(case)
    wl = get_workload(name)
    tasks_before = cluster.tasks
    state = wl.distribute(cluster, digits, params)
    try:
        out = wl.run(cluster, state, params)
    finally:
        wl.release(cluster, state)
    matches = wl.matches(out.quality, base)
    assert matches and all(matches.values()), (case, out.quality, base)
    if name != "noop":
        assert cluster.tasks > tasks_before


# -- measurement: per-worker timelines, the machine, the frameworks' artefacts ---------------

def test_a_trial_records_timelines_the_machine_and_artifacts(cluster, digits, tmp_path):
    """One real trial through the runner: every worker sampled at least 10 times with its
    timeline, the machine's figures around the trial, and the framework's own records saved
    beside the results file."""
    import json

    from bench.measure import busy_rule, environment
    from bench.runner import _base_record, _run_trial
    from bench.spec import BenchmarkSpec

    # 3 x 60 one-by-one tiny tasks: a few tenths of a second of compute on every framework.
    spec = BenchmarkSpec(workloads=[WorkloadSpec(name="tasks", params={
        "count": 20, "sync_count": 60})], repeats=3, warmup=1, timeout_seconds=300)
    wl = spec.workloads[0]
    base = _base_record(spec, "r1", environment(), cluster.framework, 2, wl, digits, 0.5)
    folder = tmp_path / "r-artifacts" / "trial"
    rec = _run_trial(cluster, wl, digits, spec, base, artifacts=str(folder)).record
    assert rec["state"] == "succeeded", rec.get("error")
    assert len(rec["phases"]["warmup"]) == 1 and len(rec["phases"]["compute"]) == 3
    assert rec["phases"]["load"] == 0.5  # the run's dataset load, as given

    res = rec["resources"]
    assert len(res["workers"]) == 2 and res["samples_min_worker"] >= 10, res
    assert res["cpu_mean_sum_of_workers"] == res["cpu_mean"]
    assert res["rss_peak_max_worker"] == res["rss_peak"] == max(
        w["rss_peak"] for w in res["workers"])
    # PSS counts the pages a worker shares (libraries, with its own processes and the others')
    # once: never above the RSS sum
    assert all(0 < w["pss_at_rss_peak"] <= w["rss_peak"] for w in res["workers"]), res
    assert res["pss_at_rss_peak_max_worker"] == max(w["pss_at_rss_peak"] for w in res["workers"])
    # unique memory (each page the worker's processes map, once): read with the PSS, never
    # below it (PSS splits a page with processes outside the worker), never above the RSS sum
    # (which counts a page once per process mapping it); 1 MiB of leeway, as a process's RSS,
    # PSS and pages are read one after the other. It needs CAP_SYS_ADMIN, which a root run has.
    if os.geteuid() == 0:
        slack = 2**20
        assert all(w["pss_at_rss_peak"] - slack <= w["unique_at_rss_peak"]
                   <= w["rss_peak"] + slack for w in res["workers"]), res
        assert all(w["unique_at_rss_peak"] < w["rss_peak"] for w in res["workers"]
                   if cluster.framework.startswith("ray")), res  # (a node: many processes)
        assert res["unique_at_rss_peak_max_worker"] == max(
            w["unique_at_rss_peak"] for w in res["workers"])
    else:
        assert res["unique_at_rss_peak_max_worker"] is None, res
    assert res["interval_s"] > 0
    compute = sum(rec["seconds"]) + 5  # (the closing sample, and a loaded machine)
    for w in res["workers"]:
        tl = w["timeline"]
        # (a long run's timeline is merged down to 200 points at most)
        assert 10 <= len(tl) <= min(w["samples"], 200), w
        times = [p[0] for p in tl]
        assert times == sorted(times) and times[0] >= 0 and times[-1] < compute, times
        assert all(p[1] >= 0 and p[2] > 20 * 2**20 for p in tl), tl
        assert max(p[2] for p in tl) == w["rss_peak"]

    m = rec["machine"]
    for when in ("before", "after"):
        assert set(m[when]) == {"load1", "load5", "steal_percent"}
        assert m[when]["load1"] >= 0 and 0 <= m[when]["steal_percent"] <= 100, m
    assert m["other_cpu_percent"] >= 0 and m["seconds"] >= sum(rec["seconds"])
    assert (m["busy"], m["busy_reason"]) == busy_rule(m["other_cpu_percent"],
                                                      m["after"]["steal_percent"])

    arts = rec["artifacts"]
    if cluster.framework == "dask":
        assert arts == {"dask_performance_report":
                        "r-artifacts/trial/dask-performance-report.html"}
        html = (tmp_path / arts["dask_performance_report"]).read_text()
        assert "Dask Performance Report" in html
    else:  # Ray, and Dask-on-Ray's Ray cluster
        assert arts == {"ray_timeline": "r-artifacts/trial/ray-timeline.json"}
        events = json.loads((tmp_path / arts["ray_timeline"]).read_text())
        assert isinstance(events, list) and events
        assert all({"name", "ph", "ts", "pid", "tid"} <= set(e) for e in events)
        assert any(e["name"] == "factorial_mod" or e["cat"] == "task:execute" for e in events)


def test_dashboards(cluster):
    """Dask's scheduler serves its dashboard (bokeh is installed): /status answers over
    loopback. Ray's runs only when asked for (``dashboard=True``: a run with artefacts)."""
    import urllib.request

    boards = cluster.dashboards()
    if cluster.framework != "dask":
        assert boards == {}  # this cluster was started without it
        return
    url = boards["dask"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/status"), url
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        assert b"bokeh" in r.read().lower()


# -- the libraries tier: Ray Train / DDP on Dask workers, Ray Tune / Dask-ML ----------------
LIB_CNN = {"arch": "cnn", "steps": 40, "batch_size": 32, "lr": 0.1, "eval_every": 10,
           "target_accuracy": 0.3}
LIB_RESNET = {"arch": "resnet18", "width": 8, "steps": 4, "batch_size": 16, "eval_every": 4}
LIB_TUNE = {"C": [1.0, 10.0], "gamma": [0.001, 0.005]}
_DDP_RESNET = {}  # framework -> quality of the ResNet run, for the Ray-vs-Dask comparison


def _lib_run(engine, digits, name, params):
    wl = get_workload(name)
    params = WorkloadSpec(name=name, params=params).params
    state = wl.distribute(engine, digits, params)
    try:
        return wl.run(engine, state, params)
    finally:
        wl.release(engine, state)


@pytest.fixture(scope="session")
def lib_baseline(digits):
    """The local single-process runs the libraries workloads are compared with."""
    engine = make_engine("local", 1)
    engine.start()
    try:
        return {"cnn": _lib_run(engine, digits, "train", LIB_CNN),
                "tune": _lib_run(engine, digits, "tune", LIB_TUNE)}
    finally:
        engine.stop()


def test_libraries_train_and_tune(cluster, digits, lib_baseline, monkeypatch):
    """One pass per framework (Ray Train's start-up costs seconds): what is true of DDP with the
    same seed, global batch, steps and batches (bench/workloads/libraries/ddp.py):
    * the small CNN has no BatchNorm, so DDP on 2 ranks computes the baseline's updates up to
      summation order: same accuracy (to one test image) and last loss (to 1e-3);
    * ResNet-18 normalises per rank, so it differs from the baseline, but Ray Train and Dask
      DDP with the same world size compute the same thing: equal to each other;
    * the grid searches share the folds: the same best score everywhere."""
    from bench.errors import RunError

    if cluster.framework == "dask-on-ray":
        with pytest.raises(RunError, match=r"train runs on local, ray .* not on dask-on-ray"):
            _lib_run(cluster, digits, "train", LIB_RESNET)
        return
    tune = _lib_run(cluster, digits, "tune", LIB_TUNE)
    assert tune.quality["best_score"] == pytest.approx(lib_baseline["tune"].quality["best_score"],
                                                       abs=1e-12)
    assert tune.extra["trials"] == 4 and tune.extra["trials_per_s"] > 0

    if cluster.framework == "dask":  # the CNN against the baseline (cheap on Dask)
        cnn, base = _lib_run(cluster, digits, "train", LIB_CNN), lib_baseline["cnn"]
        assert cnn.extra["world"] == 2 and base.extra["world"] == 1
        assert abs(cnn.quality["accuracy"] - base.quality["accuracy"]) <= 1 / 360 + 1e-9
        assert cnn.quality["loss"] == pytest.approx(base.quality["loss"], rel=1e-3)
        assert cnn.quality["accuracy"] > 0.3 and cnn.extra["time_to_target_s"] is not None
        assert [s for s, _ in cnn.extra["curve"]] == [10, 20, 30, 40]

    resnet = _lib_run(cluster, digits, "train", LIB_RESNET)
    assert resnet.extra["world"] == 2 and resnet.extra["samples_per_s"] > 0
    assert resnet.extra["setup_s"] > 0
    _DDP_RESNET[cluster.framework] = resnet.quality
    if len(_DDP_RESNET) == 2:  # the second framework of the two checks against the first
        ray, dask = _DDP_RESNET["ray"], _DDP_RESNET["dask"]
        assert ray["accuracy"] == pytest.approx(dask["accuracy"], abs=1 / 360 + 1e-9)
        assert ray["loss"] == pytest.approx(dask["loss"], rel=1e-3)

    # A missing library is one line naming the package (the import made to fail for real).
    missing, message = (
        ("ray.train.torch", r"^train on ray needs the Python package 'ray\[train\]'")
        if cluster.framework == "ray" else
        ("torch.distributed", "^train on dask needs the Python package 'torch'"))
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(RunError, match=message):
        _lib_run(cluster, digits, "train", LIB_RESNET)
