"""Example specs parse; a faulted trial records what really happened to the workers."""
from pathlib import Path

import pytest

from bench.frameworks import in_process, is_baseline
from bench.runner import run_benchmark
from bench.spec import load_spec, parse_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    """Each example loads as ``testbed run -f`` loads it, plans one trial for every framework
    and worker count it names, and, as a Benchmark's spec, passes the CRD's schema and the
    operator's validation: ``kubectl apply`` and the operator take it too."""
    import jsonschema
    import yaml

    from testbed_operator.crd import spec_schema
    from testbed_operator.validation import validate_benchmark

    doc = yaml.safe_load(path.read_text())
    raw = doc["spec"] if doc.get("kind") == "Benchmark" else {k: v for k, v in doc.items()
                                                               if k != "name"}
    spec = load_spec(path)
    assert spec.frameworks == raw["frameworks"] and spec.workers == raw["workers"]
    planned = spec.trials()
    # In-process frameworks (Dask's local schedulers) run first, like the baseline; the
    # clusters keep the spec's order.
    assert [(f, w) for f, w in planned if not in_process(f)] == [
        (f, w) for f in raw["frameworks"] if not in_process(f) for w in raw["workers"]]
    assert {(f, w) for f, w in planned if in_process(f) and not is_baseline(f)} <= {
        (f, w) for f in raw["frameworks"] for w in [*raw["workers"], 1]}
    assert len(planned) == len(set(planned))
    jsonschema.Draft4Validator(spec_schema()).validate(raw)
    body = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
            "metadata": {"name": (doc.get("metadata") or {}).get("name") or path.stem,
                         "namespace": "bench"}, "spec": raw}
    assert validate_benchmark(body).model_dump() == spec.model_dump()


def test_faults_do_not_apply_to_the_local_baseline(tmp_path):
    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 1, "warmup": 0, "workload": {"name": "noop"},
                       "faults": {"killWorkers": 1}})
    (rec,) = run_benchmark(spec, str(tmp_path / "r.jsonl")).records
    assert rec["faults"] == {**rec["faults"], "applicable": False,
                             "reason": "the local baseline has no workers to kill"}


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
