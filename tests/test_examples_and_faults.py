"""Example specs parse; a faulted trial records what really happened to the workers."""
from pathlib import Path

import psutil
import pytest

from bench.results import read_records
from bench.runner import run_benchmark
from bench.spec import load_spec, parse_spec

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    spec = load_spec(path)
    assert spec.trials()


@pytest.mark.slow
def test_killing_a_dask_worker_mid_run_is_recorded_truthfully(tmp_path):
    spec = parse_spec({
        "frameworks": ["dask"], "workers": [2], "baselines": False, "repeats": 2,
        "workload": {"name": "gridsearch", "params": {"C": [1.0, 10.0, 100.0, 1000.0]}},
        "faults": {"killWorkers": 1, "afterSeconds": 0.3, "seed": 3},
    })
    out = tmp_path / "r.jsonl"
    result = run_benchmark(spec, str(out))
    (rec,) = read_records(out)
    assert rec == result.records[0]
    f = rec["faults"]
    assert rec["state"] == "succeeded" and f["applicable"] is True
    assert len(f["killed"]) == 1 and f["killed_before_end"], f
    assert not psutil.pid_exists(f["killed"][0]["pid"]) or \
        psutil.Process(f["killed"][0]["pid"]).status() == psutil.STATUS_ZOMBIE
    # Dask reschedules the lost worker's tasks on the survivor: the run finishes, same answer.
    assert f["finished"] is True and f["quality_matches"] is True, f
    assert f["seconds"] > 0.3 and f["penalty_seconds"] is not None


def test_faults_do_not_apply_to_the_local_baseline(tmp_path):
    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 1, "warmup": 0, "workload": {"name": "noop"},
                       "faults": {"killWorkers": 1}})
    (rec,) = run_benchmark(spec, str(tmp_path / "r.jsonl")).records
    assert rec["faults"]["applicable"] is False and "did not start" in rec["faults"]["reason"]


def test_local_baselines_really_use_the_stated_threads(tmp_path):
    """OpenMP's thread count is per calling thread: the limit must hold in the trial's thread."""
    import os

    spec = parse_spec({"frameworks": ["local"], "workers": [1], "repeats": 1, "warmup": 0,
                       "workload": {"name": "noop"}})
    recs = run_benchmark(spec, str(tmp_path / "r.jsonl")).records
    pools = {r["workers"]: r["environment"]["driver_threadpools"] for r in recs}
    assert pools[1] and set(pools[1].values()) == {1}, pools
    cores = os.cpu_count()
    if cores > 1:
        assert set(pools[cores].values()) == {cores}, pools
