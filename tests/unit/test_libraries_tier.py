"""The libraries tier's registry entries and Dask's single-machine schedulers as frameworks:
the plan of trials, the one-line refusals, and a missing library named before any cluster
starts."""
import sys

import pytest

from bench.errors import RunError, UsageError
from bench.frameworks import cluster_kind, in_process, is_baseline
from bench.params import WORKLOADS
from bench.runner import check_packages, unsupported
from bench.spec import SpecError, parse_spec

DASK_LOCAL = ["dask-threads", "dask-processes", "dask-synchronous"]


def test_dask_single_machine_schedulers_run_in_process_but_are_not_the_baseline():
    for f in DASK_LOCAL:
        assert in_process(f) and not is_baseline(f) and cluster_kind(f) is None
    s = parse_spec({"frameworks": ["dask", *DASK_LOCAL], "workers": [2, 4]})
    # local (baselines: 1 thread and every core) first, then the in-process frameworks
    # named (synchronous once, with 1), then the clusters.
    assert s.trials(cores=2) == [("local", 1), ("local", 2), ("dask-threads", 2),
                                 ("dask-threads", 4), ("dask-processes", 2),
                                 ("dask-processes", 4), ("dask-synchronous", 1),
                                 ("dask", 2), ("dask", 4)]


def test_only_dask_graph_workloads_run_on_dask_single_machine_schedulers():
    assert unsupported("dataframe", "dask-threads") is None
    assert unsupported("etl", "dask-processes") is None
    assert unsupported("knn", "ray") is None
    assert unsupported("knn", "dask-threads") == (
        "knn does not run on dask-threads: Dask's single-machine schedulers run only the "
        "workloads built on Dask collections (dataframe, etl)")


def test_dask_local_engine_refuses_the_engine_vocabulary_in_one_line():
    from bench.engines import make_engine

    engine = make_engine("dask-synchronous", 1)
    engine.start()
    try:
        with pytest.raises(RunError, match=r"^dask-synchronous runs only Dask graphs \(the "
                                           r"workloads dataframe, etl\); this workload uses "
                                           r"the engine's put$"):
            engine.put([1])
    finally:
        engine.stop()


def test_library_workloads_are_a_tier_of_their_own_and_named_explicitly():
    assert {n for n, w in WORKLOADS.items() if w.tier == "libraries"} >= {"etl", "xgboost"}
    assert not WORKLOADS["etl"].default and not WORKLOADS["xgboost"].default
    s = parse_spec({"workloads": [{"name": "xgboost", "params": {"rounds": 5}}]})
    assert s.workloads[0].params["rounds"] == 5
    with pytest.raises(SpecError, match=r"spec.workloads.0.params.rounds: .*integer"):
        parse_spec({"workloads": [{"name": "xgboost", "params": {"rounds": 5.0}}]})
    with pytest.raises(SpecError, match=r"spec.workloads.0.params.min_amout: unknown field; "
                                        r"did you mean 'min_amount'\?"):
        parse_spec({"workloads": [{"name": "etl", "params": {"min_amout": 1.0}}]})


def test_a_missing_library_is_named_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)  # what `import xgboost` then raises
    spec = parse_spec({"workloads": [{"name": "knn"}, {"name": "xgboost"}]})
    with pytest.raises(UsageError) as e:
        check_packages(spec)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("workloads.1: xgboost needs the Python package 'xgboost', "
                              "which cannot be imported here")
