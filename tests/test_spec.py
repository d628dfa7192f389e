"""The spec model: defaults, YAML/CRD-shaped input, and errors that name the field."""
import pytest

from bench.params import DEFAULT_WORKLOADS
from bench.spec import BenchmarkSpec, SpecError, load_spec, parse_spec


def test_defaults_are_the_documented_default_run():
    s = BenchmarkSpec()
    assert s.frameworks == ["ray", "dask"]
    assert s.workers == [1, 2]
    assert [w.name for w in s.workloads] == list(DEFAULT_WORKLOADS)
    assert "resnet18" not in DEFAULT_WORKLOADS
    assert s.dataset.name == "digits" and s.repeats == 3 and s.warmup == 1
    # Baselines first (1 thread and all cores), then each framework's sweep.
    assert s.trials(cores=2) == [("local", 1), ("local", 2), ("ray", 1), ("ray", 2),
                                 ("dask", 1), ("dask", 2)]
    assert BenchmarkSpec(baselines=False).trials(cores=2)[0] == ("ray", 1)


def test_workload_params_get_defaults_and_camel_case_is_accepted():
    s = parse_spec({"workload": {"name": "knn", "params": {"n_neighbors": 3}},
                    "workerResources": {"cpu": "500m", "memory": "1Gi"}, "timeoutSeconds": 60})
    assert s.workloads[0].params == {"n_neighbors": 3, "chunks_per_worker": 2}
    assert s.worker_resources.cpu_count() == 0.5
    assert s.worker_resources.memory_bytes() == 2**30
    assert s.timeout_seconds == 60


def test_whole_benchmark_resource_is_accepted(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("apiVersion: testbed.dev/v1alpha1\nkind: Benchmark\nmetadata: {name: digits-knn}\n"
                 "spec:\n  frameworks: [ray, dask]\n  workers: [2, 1, 2]\n"
                 "  workload: {name: knn}\n  dataset: {name: digits, scale: 2}\n")
    s = load_spec(p)
    assert s.name == "digits-knn" and s.workers == [1, 2] and s.dataset.scale == 2


@pytest.mark.parametrize("data, field, words", [
    ({"frameworks": ["spark"]}, "spec.frameworks", "unknown framework 'spark'"),
    ({"workers": [0]}, "spec.workers.0", "greater than 0"),
    ({"workers": [-2, 1]}, "spec.workers.0", "greater than 0"),
    ({"workers": []}, "spec.workers", "at least 1"),
    ({"workers": [100000]}, "spec.workers", "maximum"),
    ({"repeats": 0}, "spec.repeats", "greater than or equal to 1"),
    ({"warmup": -1}, "spec.warmup", "greater than or equal to 0"),
    ({"workloads": [{"name": "sort"}]}, "spec.workloads.0.name", "unknown workload 'sort'"),
    ({"workload": {"name": "knn", "params": {"k": 3}}}, "spec.workloads.0.params.k", "unknown field"),
    ({"workload": {"name": "knn", "params": {"n_neighbors": "many"}}},
     "spec.workloads.0.params.n_neighbors", "valid integer"),
    ({"dataset": {"name": "imagenet"}}, "spec.dataset.name", "unknown dataset 'imagenet'"),
    ({"dataset": {"name": "s3", "uri": "s3:///key-without-bucket"}}, "spec.dataset", "s3://bucket/key"),
    ({"dataset": {"name": "s3"}}, "spec.dataset", "needs 'uri'"),
    ({"dataset": {"name": "file"}}, "spec.dataset", "needs 'path'"),
    ({"workerResources": {"memory": "lots"}}, "spec.workerResources.memory", "memory quantity"),
    ({"timeoutSeconds": 0}, "spec.timeoutSeconds", "greater than or equal to 1"),
    ({"name": "Bad_Name"}, "spec.name", "DNS label"),
    ({"frameworks": ["ray"], "colour": "blue"}, "spec.colour", "unknown field"),
])
def test_bad_specs_name_the_field(data, field, words):
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    msg = str(e.value)
    assert field in msg and words in msg, msg


def test_unreadable_specs(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("frameworks: [ray\nworkers: 1")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- ray\n- dask\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(listy)
