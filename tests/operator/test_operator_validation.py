"""Semantic Benchmark checks: what the schema cannot catch, reported with the field's name."""
import pytest

from testbed_operator.validation import (
    BenchmarkInvalid,
    split_spec,
    trial_requests,
    validate_benchmark,
)


def body(**spec):
    return {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"frameworks": ["ray", "dask"], "workers": [1, 2], **spec}}


def quota(**hard):
    return {"metadata": {"name": "compute"}, "spec": {"hard": hard}}


def test_a_good_benchmark_gives_the_engine_spec():
    """The engine's spec, with the workload's defaults filled in; the operator-only fields are
    split off for the operator (the engine would refuse them as unknown)."""
    b = body(workload={"name": "knn"}, failurePolicy="stop", resultsUri="s3://results/run1",
             image="runner:1")
    spec = validate_benchmark(b)
    assert spec.name == "b" and spec.workloads[0].params["n_neighbors"] == 5
    assert (spec.frameworks, spec.workers) == (["ray", "dask"], [1, 2])
    engine, operator_only = split_spec(b)
    assert operator_only == {"failurePolicy": "stop", "resultsUri": "s3://results/run1",
                             "image": "runner:1"}
    assert not set(operator_only) & set(engine)
    dumped = spec.model_dump(by_alias=True)
    assert not {"failurePolicy", "resultsUri", "image"} & set(dumped)
    # Each of them is checked by the operator itself: a bad value names its field.
    for field, bad in (("failurePolicy", "sometimes"), ("resultsUri", "gs://x"),
                       ("trialRetries", 9), ("startupTimeoutSeconds", 0)):
        with pytest.raises(BenchmarkInvalid, match=f"spec.{field}"):
            validate_benchmark(body(workload={"name": "knn"}, **{field: bad}))


@pytest.mark.parametrize(("spec", "words"), [
    ({"workload": {"name": "knn", "params": {"n_neighbors": "five"}}},
     "spec.workloads.0.params.n_neighbors"),
    ({"workload": {"name": "knn", "params": {"neighbours": 5}}},
     "spec.workloads.0.params.neighbours: unknown field"),
    ({"dataset": {"name": "s3", "uri": "s3:///no-bucket.csv"}}, "s3://bucket/key"),
    ({"resultsUri": "https://example/x"}, "spec.resultsUri"),
    ({"failurePolicy": "retry"}, "spec.failurePolicy"),
    ({"gpus": 1}, "spec.gpus: unknown field"),
])
def test_semantic_errors_name_the_field(spec, words):
    with pytest.raises(BenchmarkInvalid) as e:
        validate_benchmark(body(**spec))
    assert words in str(e.value), str(e.value)


def test_more_workers_than_the_quota_allows_is_rejected_before_anything_starts():
    b = body(workers=[1, 8], workerResources={"cpu": "2", "memory": "4Gi"})
    assert trial_requests(validate_benchmark(b), 8) == {"pods": 10, "cpu": 20.0,
                                                        "memory": 10 * 4 * 2**30}
    with pytest.raises(BenchmarkInvalid,
                       match=r"spec.workers: the largest trial \(8 workers.*needs 20 "
                             r"requests.cpu, but ResourceQuota 'compute' allows 16"):
        validate_benchmark(b, [quota(**{"requests.cpu": "16"})])
    with pytest.raises(BenchmarkInvalid, match=r"needs 40.0Gi requests.memory"):
        validate_benchmark(b, [quota(**{"requests.memory": "32Gi"})])
    with pytest.raises(BenchmarkInvalid, match=r"needs 10 pods"):
        validate_benchmark(b, [quota(pods="5")])
    # Within the quota (millicores and binary suffixes understood): accepted.
    validate_benchmark(b, [quota(**{"requests.cpu": "20000m", "requests.memory": "40Gi",
                                    "pods": "10"})])
