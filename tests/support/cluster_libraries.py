"""The libraries tier on the real cluster (tests/cluster/test_real_cluster.py): partitioned
datasets written to the cluster's S3 server, the Benchmarks that read them through the
operator, and what their results must show.

The runner image the cluster tier imports is the full one (torch) unless
``TESTBED_TEST_RUNNER_VARIANT=slim``: ``etl``, ``xgboost`` and ``tune`` run on either, ``train``
(Ray Train's TorchTrainer against DDP on Dask workers) only on the full one.
"""
from __future__ import annotations

import json
from typing import Any

from bench.data import S3Settings
from bench.data.generate import make_dataset
from bench.report.stats import within_tolerance

SECRET = "dataset-s3"          # the Benchmarks' credentialsSecret, in their namespace
KEYS = {"AWS_ACCESS_KEY_ID": "testbed", "AWS_SECRET_ACCESS_KEY": "testbed"}
PREFIX = "libraries"
# Small: the point is the wiring (workers reading S3 themselves, Ray Train's storage, the
# etl output on S3), not the figures.
DATASETS = {"transactions": {"rows": 40_000, "partitions": 4},
            "classification": {"rows": 20_000, "columns": 8, "partitions": 4}}


def dataset_uri(bucket: str, kind: str) -> str:
    return f"s3://{bucket}/{PREFIX}/{kind}"


def make_datasets(bucket: str, endpoint: str) -> None:
    """Both partitioned datasets, written to S3 by this process (credentials: KEYS in the
    environment, set by the caller)."""
    s3 = S3Settings(endpoint_url=endpoint, region="us-east-1")
    for kind, size in DATASETS.items():
        make_dataset(kind, dataset_uri(bucket, kind), s3=s3, overwrite=True, **size)


def secret(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": namespace}, "stringData": dict(KEYS)}


def spec(kind: str | None, workload: dict[str, Any], bucket: str, endpoint: str,
         resources: dict[str, str]) -> dict[str, Any]:
    """A Benchmark of one libraries workload on ray and dask at one worker, reading the
    partitioned dataset ``kind`` from S3 with the credentials of ``SECRET`` (None: digits)."""
    dataset = {"name": "digits"} if kind is None else {
        "name": "parquet", "uri": dataset_uri(bucket, kind), "endpointUrl": endpoint,
        "region": "us-east-1"}
    return {"frameworks": ["ray", "dask"], "workers": [1], "workloads": [workload],
            "dataset": dataset, "credentialsSecret": SECRET, "repeats": 1, "warmup": 0,
            "workerResources": dict(resources), "startupTimeoutSeconds": 300,
            "timeoutSeconds": 300}


def results_by_framework(bm: dict[str, Any], workload: str) -> dict[str, dict[str, Any]]:
    """Each framework's result of ``workload``: every trial Succeeded, every result too."""
    status = bm["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[-4000:]
    out: dict[str, dict[str, Any]] = {}
    for trial in status["trials"]:
        assert trial["state"] == "Succeeded", trial
        (res,) = trial["results"]
        assert res["workload"] == workload and res["state"] == "succeeded", res
        assert res["median"] > 0 and res["quality"] is not None, res
        out[trial["framework"]] = res
    assert sorted(out) == ["dask", "ray"], sorted(out)
    return out


def assert_quality_equal(results: dict[str, dict[str, Any]]) -> None:
    """Ray's and Dask's quality agree within the workload's tolerance (the report's rule)."""
    ray, dask = results["ray"], results["dask"]
    assert ray["qualityMetric"] == dask["qualityMetric"], (ray, dask)
    workload, metric = ray["workload"], ray["qualityMetric"]
    assert within_tolerance(workload, metric, ray["quality"], dask["quality"]), \
        f"{workload} {metric}: ray {ray['quality']} against dask {dask['quality']}"
