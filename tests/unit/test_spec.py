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
    assert s.workloads[0].params == {"n_neighbors": 3, "chunks_per_worker": 2,
                                    "train_partitions": 1}
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


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"frameworks": ["spark"]}, "spec.frameworks", "unknown framework 'spark'"),
    ({"workers": [0]}, "spec.workers.0", "greater than 0"),
    ({"workers": [-2, 1]}, "spec.workers.0", "greater than 0"),
    ({"workers": []}, "spec.workers", "at least 1"),
    ({"workers": [100000]}, "spec.workers", "maximum"),
    ({"repeats": 0}, "spec.repeats", "greater than or equal to 1"),
    ({"warmup": -1}, "spec.warmup", "greater than or equal to 0"),
    ({"workloads": [{"name": "sort"}]}, "spec.workloads.0.name", "unknown workload 'sort'"),
    ({"workload": {"name": "knn", "params": {"k": 3}}}, "spec.workloads.0.params.k",
     "unknown field"),
    ({"workload": {"name": "knn", "params": {"n_neighbors": "many"}}},
     "spec.workloads.0.params.n_neighbors", "valid integer"),
    ({"dataset": {"name": "imagenet"}}, "spec.dataset.name", "unknown dataset 'imagenet'"),
    ({"dataset": {"name": "s3", "uri": "s3:///key-without-bucket"}}, "spec.dataset",
     "s3://bucket/key"),
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


# ---- issue 10: input that used to be accepted ---------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    # YAML booleans and floats where a count is meant (pydantic's lax mode made them 1/0/1).
    ({"workers": [True]}, "spec.workers.0: Input should be a valid integer (got True)"),
    ({"workers": [1.0]}, "spec.workers.0: Input should be a valid integer (got 1.0)"),
    ({"repeats": False}, "spec.repeats: Input should be a valid integer (got False)"),
    ({"warmup": True}, "spec.warmup: Input should be a valid integer (got True)"),
    ({"timeoutSeconds": True}, "spec.timeoutSeconds: Input should be a valid integer (got True)"),
    ({"repeats": "3"}, "spec.repeats: Input should be a valid integer (got '3')"),
    ({"faults": {"killWorkers": True}},
     "spec.faults.killWorkers: Input should be a valid integer (got True)"),
    ({"faults": {"afterSeconds": True}},
     "spec.faults.afterSeconds: Input should be a valid number (got True)"),
    ({"ray": {"maxRetries": True}},
     "spec.ray.maxRetries: Input should be a valid integer (got True)"),
    ({"dask": {"allowedFailures": False}},
     "spec.dask.allowedFailures: Input should be a valid integer (got False)"),
    ({"dask": {"nanny": 1}}, "spec.dask.nanny: Input should be a valid boolean (got 1)"),
    ({"dataset": {"scale": True}},
     "spec.dataset.scale: Input should be a valid integer (got True)"),
    ({"dataset": {"name": "synthetic", "samples": True}},
     "spec.dataset.samples: Input should be a valid integer (got True)"),
    ({"dataset": {"name": "synthetic", "features": 64.0}},
     "spec.dataset.features: Input should be a valid integer (got 64.0)"),
    ({"workload": {"name": "knn", "params": {"n_neighbors": True}}},
     "spec.workloads.0.params.n_neighbors: Input should be a valid integer (got True)"),
    ({"workload": {"name": "kmeans", "params": {"n_clusters": 8.0}}},
     "spec.workloads.0.params.n_clusters: Input should be a valid integer (got 8.0)"),
    # Fields the chosen dataset does not read.
    ({"dataset": {"name": "digits", "uri": "s3://b/k"}},
     ("spec.dataset.uri: the digits dataset does not use uri, only the s3 and parquet datasets; "
      "remove it or set dataset.name: s3")),
    ({"dataset": {"uri": "s3://b/k"}}, "spec.dataset.uri: the digits dataset does not use uri"),
    ({"dataset": {"name": "digits", "samples": 5000}},
     "spec.dataset.samples: the digits dataset does not use samples, only the synthetic dataset"),
    ({"dataset": {"name": "synthetic", "path": "x.csv"}},
     "spec.dataset.path: the synthetic dataset does not use path, only the file dataset"),
    ({"dataset": {"name": "digits", "target": "y"}},
     ("spec.dataset.target: the digits dataset does not use target, only the file and s3 datasets; "
      "remove it or set dataset.name: file")),
    ({"dataset": {"name": "file", "path": "x.csv", "endpointUrl": "http://minio:9000"}},
     ("spec.dataset.endpointUrl: the file dataset does not use endpointUrl, only the s3 and "
      "parquet datasets")),
    # Quantities beyond any node.
    ({"workerResources": {"memory": "999999Ei"}},
     "spec.workerResources.memory: memory '999999Ei' is more than the maximum of 64Ti per worker"),
    ({"workerResources": {"memory": "65Ti"}}, "spec.workerResources.memory: memory '65Ti' is more"),
    ({"workerResources": {"memory": 0}},
     "spec.workerResources.memory: memory '0' must be more than 0"),
    ({"workerResources": {"cpu": "1025"}},
     "spec.workerResources.cpu: cpu '1025' is more than the maximum of 1024 cores per worker"),
    ({"workerResources": {"cpu": "0m"}}, "spec.workerResources.cpu: cpu '0m' must be more than 0"),
    # Suggestions.
    ({"frameworks": ["rey"]}, ("spec.frameworks: unknown framework 'rey'; expected one of local, "
                               "ray, dask, dask-on-ray, dask-threads, dask-processes, "
                               "dask-synchronous; did you mean 'ray'?")),
    ({"workload": {"name": "kmean"}}, ("spec.workloads.0.name: unknown workload 'kmean'; expected "
                                       "one of knn, kmeans, pca, gridsearch, classify, cnn, "
                                       "resnet18, dataframe, tasks, noop, train, tune, etl, "
                                       "xgboost; did you mean 'kmeans'?")),
    ({"dataset": {"name": "synthtic"}},
     ("spec.dataset.name: unknown dataset 'synthtic'; expected one of digits, synthetic, file, s3, "
      "parquet; did you mean 'synthetic'?")),
    ({"repeat": 3}, "spec.repeat: unknown field; did you mean 'repeats'?"),
    ({"timeout_second": 3}, "spec.timeout_second: unknown field; did you mean 'timeoutSeconds'?"),
    ({"workerResource": {}}, "spec.workerResource: unknown field; did you mean 'workerResources'?"),
    ({"workloads": [{"name": "knn", "parms": {}}]},
     "spec.workloads.0.parms: unknown field; did you mean 'params'?"),
    ({"workload": {"name": "knn", "params": {"n_neighbours": 3}}},
     "spec.workloads.0.params.n_neighbours: unknown field; did you mean 'n_neighbors'?"),
    ({"faults": {"killWorker": 1}},
     "spec.faults.killWorker: unknown field; did you mean 'killWorkers'?"),
    ({"dataset": {"name": "s3", "uri": "s3://b/k", "endpointURL": "x"}},
     "spec.dataset.endpointURL: unknown field; did you mean 'endpointUrl'?"),
    ({"colour": "blue"}, "spec.colour: unknown field"),
])
def test_issue_10_inputs_are_rejected_with_one_line(data, message):
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    msg = str(e.value)
    assert msg.startswith(message) and "\n" not in msg, msg
    if message.endswith("unknown field"):
        assert msg == message  # nothing close enough to suggest


@pytest.mark.parametrize("data", [
    {"workers": [1, 2], "repeats": 3, "warmup": 0, "timeoutSeconds": 60},
    {"faults": {"afterSeconds": 5}},  # an integer where a number is meant is fine
    {"dataset": {"name": "synthetic", "noise": 0, "samples": 500}},
    {"workload": {"name": "gridsearch", "params": {"C": [1, 10], "gamma": [0.01]}}},
    {"workerResources": {"cpu": 2, "memory": 2147483648}},
    {"workerResources": {"cpu": "1024", "memory": "64Ti"}},
    {"dataset": {"name": "synthetic", "scale": 1, "uri": None}},  # defaults are not "set"
    {"dataset": {"name": "s3", "uri": "s3://b/k", "endpointUrl": "http://minio:9000",
                 "format": "csv", "target": "label", "seed": 1, "testSize": 0.3}},
    {"dataset": {"name": "file", "path": "x.npz", "format": "npz"}},
])
def test_real_values_are_still_accepted(data):
    parse_spec(data)


def test_a_whole_model_read_back_is_accepted():
    """The operator sends the runner the whole model (every field, defaults included)."""
    import json

    for data in ({}, {"dataset": {"name": "synthetic", "samples": 500}},
                 {"dataset": {"name": "s3", "uri": "s3://b/k"}}, {"faults": {"killWorkers": 1}}):
        spec = parse_spec(data)
        dumped = spec.model_dump(by_alias=True, exclude_none=True)
        again = parse_spec(json.loads(json.dumps(dumped)))
        assert again == spec


@pytest.mark.parametrize(("data", "message"), [
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
      "spec": {"workers": [1]}},
     ("kind: expected 'Benchmark', got 'ConfigMap'; only a Benchmark resource "
      "(testbed.dev/v1alpha1) or a bare spec can be run")),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}},
     "kind: expected 'Benchmark', got 'Deployment'"),
    ({"apiVersion": "testbed.dev/v1", "kind": "Benchmark", "spec": {}},
     "apiVersion: expected 'testbed.dev/v1alpha1', got 'testbed.dev/v1'"),
    ({"kind": "Benchmark", "spec": {}},
     ("apiVersion: missing; a resource with kind needs apiVersion: testbed.dev/v1alpha1 and kind: "
      "Benchmark (or give a bare spec, without either)")),
    ({"apiVersion": "testbed.dev/v1alpha1", "spec": {}},
     "kind: missing; a resource with apiVersion"),
    ({"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark", "specs": {}},
     ("specs: unknown field of a Benchmark resource; expected apiVersion, kind, metadata, spec, "
      "status; did you mean 'spec'?")),
    ({"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark", "spec": [1]},
     "spec: expected a mapping of fields, got list"),
    ({"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark", "metadata": "x"},
     "metadata: expected a mapping of fields, got str"),
])
def test_only_a_benchmark_resource_runs(data, message):
    with pytest.raises(SpecError) as e:
        parse_spec(data)
    assert str(e.value).startswith(message), str(e.value)


def test_resource_errors_in_a_file_name_the_file(tmp_path):
    p = tmp_path / "cm.yaml"
    p.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {workers: [1]}\n")
    with pytest.raises(SpecError, match=r"^cm\.yaml\.kind: expected 'Benchmark', got 'ConfigMap'"):
        load_spec(p)


def test_the_api_version_is_the_crds():
    from bench.spec import API_VERSION, KIND
    from testbed_operator import crd

    assert f"{crd.GROUP}/{crd.VERSION}" == API_VERSION and KIND == crd.KIND


def test_duplicate_keys_are_errors_with_the_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("frameworks: [ray]\nworkers: [1]\nrepeats: 3\nworkers: [2]\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(e.value) == ("dup.yaml: duplicate key 'workers' at line 4 (first at line 2); each "
                            "field may be given once"), str(e.value)
    nested = tmp_path / "nested.yaml"
    nested.write_text("workload:\n  name: knn\n  params: {n_neighbors: 3, n_neighbors: 5}\n")
    with pytest.raises(SpecError,
                       match=r"duplicate key 'n_neighbors' at line 3 \(first at line 3\)"):
        load_spec(nested)
    # A merge key (<<) may be overridden: that is what it is for.
    merged = tmp_path / "merged.yaml"
    merged.write_text("workload:\n  <<: {name: knn, params: {n_neighbors: 3}}\n"
                      "  params: {n_neighbors: 5}\n")
    assert load_spec(merged).workloads[0].params["n_neighbors"] == 5


def test_duplicate_keys_in_spec_json():
    from bench.spec import loads_json_unique

    assert loads_json_unique('{"workers": [1]}') == {"workers": [1]}
    with pytest.raises(ValueError, match="duplicate key 'workers'"):
        loads_json_unique('{"workers": [1], "workers": [2]}')


def test_a_local_run_must_fit_the_machine():
    from bench.spec import check_fits_machine

    gib = 2**30
    # The defaults (2 workers x 2Gi) fit a 24 GiB machine, and so does 1Gi x 2.
    check_fits_machine(BenchmarkSpec(), total_memory=24 * gib)
    check_fits_machine(parse_spec({"workerResources": {"memory": "1Gi"}}), total_memory=24 * gib)
    big = parse_spec({"workers": [1, 4], "workerResources": {"memory": "8Gi"}})
    with pytest.raises(SpecError) as e:
        check_fits_machine(big, source="big.yaml", total_memory=24 * gib)
    assert str(e.value) == ("big.yaml.workerResources.memory: 4 workers × 8Gi = 32Gi is more than "
                            "this machine's 24Gi of memory; lower workerResources.memory or the "
                            "worker count")
    # Only the local baselines: no workers are started, so nothing to check.
    check_fits_machine(parse_spec({"frameworks": ["local"], "workerResources": {"memory": "8Gi"}}),
                       total_memory=gib)
    # This machine's own memory is the default.
    with pytest.raises(SpecError, match="this machine's"):
        check_fits_machine(parse_spec({"workerResources": {"memory": "64Ti"}}))


def test_one_framework_type_with_a_baseline_capability():
    import typing

    from bench.frameworks import BASELINE, FRAMEWORKS, Framework, is_baseline
    from bench.results import FRAMEWORK_ORDER
    from bench.spec import FRAMEWORKS as SPEC_FRAMEWORKS
    from testbed_operator.crd import spec_schema

    assert FRAMEWORKS == typing.get_args(Framework) == SPEC_FRAMEWORKS == FRAMEWORK_ORDER
    assert [f for f in FRAMEWORKS if is_baseline(f)] == [BASELINE]
    assert spec_schema()["properties"]["frameworks"]["items"]["enum"] == list(FRAMEWORKS)
    # The baselines come first in the plan, whatever the spec's order.
    s = parse_spec({"frameworks": ["dask", "local"], "workers": [2]})
    assert [f for f, _ in s.trials(cores=2)] == [BASELINE] * 2 + ["dask"]


def test_each_framework_says_which_cluster_runs_it_and_the_operator_follows():
    from bench.frameworks import FRAMEWORKS, cluster_kind
    from testbed_operator.drivers import DaskDriver, RayDriver, driver_for

    kinds = {f: cluster_kind(f) for f in FRAMEWORKS}
    assert kinds == {"local": None, "ray": "ray", "dask": "dask", "dask-on-ray": "ray",
                     "dask-threads": None, "dask-processes": None, "dask-synchronous": None}
    drivers = {f: type(driver_for(f)) for f in FRAMEWORKS if kinds[f] is not None}
    assert drivers == {"ray": RayDriver, "dask": DaskDriver, "dask-on-ray": RayDriver}


def test_unknown_frameworks_keep_their_message():
    with pytest.raises(SpecError, match=r"spec.frameworks: unknown framework 'rya'; expected "
                                        r"one of local, ray, dask, dask-on-ray, dask-threads, "
                                        r"dask-processes, dask-synchronous; did you mean "
                                        r"'ray'\?"):
        parse_spec({"frameworks": ["rya"]})
    with pytest.raises(SpecError, match=r"spec.frameworks.0: Input should be 'local', 'ray', "
                                        r"'dask', 'dask-on-ray', 'dask-threads', "
                                        r"'dask-processes' or 'dask-synchronous' \(got 1\)"):
        parse_spec({"frameworks": [1]})


def test_the_workload_registry_declares_params_checks_and_torch():
    from bench.params import DEFAULT_WORKLOADS, PARAMS, WORKLOAD_NAMES, WORKLOADS

    assert tuple(WORKLOADS) == WORKLOAD_NAMES and set(DEFAULT_WORKLOADS) <= set(WORKLOADS)
    assert {n for n, w in WORKLOADS.items() if w.needs_torch} == {"cnn", "resnet18", "train"}
    assert all(PARAMS[n] is w.params for n, w in WORKLOADS.items())
    assert all(len(w.impl.split(":")) == 2 for w in WORKLOADS.values())
    assert {n for n, w in WORKLOADS.items() if w.checks} == {
        "pca", "kmeans", "gridsearch", "cnn", "resnet18", "train", "tune", "etl", "xgboost"}


def test_data_checks_name_the_field_before_any_cluster_starts():
    import numpy as np

    from bench.datasets import Dataset
    from bench.errors import UsageError
    from bench.runner import check_workloads

    data = Dataset(X_train=np.zeros((6, 4)), y_train=np.array([0, 0, 0, 0, 1, 1]),
                   X_test=np.zeros((1, 4)), y_test=np.array([0]))
    for workload, message in (
            ({"name": "pca", "params": {"n_components": 5}},
             "workloads.1.params.n_components: 5 is more than the dataset's 4 features"),
            ({"name": "kmeans", "params": {"n_clusters": 7}},
             "workloads.1.params.n_clusters: more clusters than rows"),
            ({"name": "gridsearch", "params": {"cv": 3}},
             "workloads.1.params.cv: 3 folds but the smallest class has only 2 training rows"),
            ({"name": "cnn"}, ("workloads.1.name: cnn needs 8x8 images (64 features, e.g. the "
                               "digits dataset); this dataset has 4"))):
        spec = parse_spec({"workloads": [{"name": "noop"}, workload]})
        with pytest.raises(UsageError) as e:
            check_workloads(spec, data)
        assert str(e.value) == message
    check_workloads(parse_spec({"workloads": [{"name": "pca", "params": {"n_components": 4}},
                                              {"name": "gridsearch", "params": {"cv": 2}}]}),
                    data)
