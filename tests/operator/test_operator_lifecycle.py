"""Operator lifecycle against the emulator with the fast fake runner (no real clusters):
restart, deletion, timeouts, failing runners and invalid specs."""
from __future__ import annotations

import asyncio

import pytest

from support.fake_controllers import FakeControllers, wait_for
from support.operator_harness import benchmark, finished, running_operator

NS = "ns1"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


async def test_fast_benchmark_succeeds(cluster):
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("fast", frameworks=["ray", "dask"], workers=[1, 2]))
        obj = await finished(api, "fast", 60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        assert set(fake.starts.values()) == {1}


async def test_restart_in_the_middle_of_a_trial_resumes_without_running_it_twice(cluster):
    """The operator stops while a runner Job is running; a new operator process resumes from
    the status, adopts the running Job and the cluster, and creates nothing a second time."""
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake:
        async with running_operator(k8s.url, NS) as first:
            await api.apply(benchmark("rs", frameworks=["dask", "ray"], workers=[1]))
            await wait_for(lambda: fake.starts["Job/rs-dask-1-runner"] == 1, 30, "the runner Job")
            # The Running step writes the status once, right after its create: wait for it.
            async def submitted() -> dict | None:
                obj = await api.benchmark("rs")
                return obj if obj["status"]["trials"][0].get("submittedAt") else None

            obj = await wait_for(submitted, 30, "the status to record the runner's submission")
            assert obj["status"]["trials"][0]["state"] == "Running"
            assert obj["status"]["trials"][0]["submittedAt"]
        assert first.stopped  # the first operator is gone; the runner still waits
        async with running_operator(k8s.url, NS) as second:
            gate.set()
            obj = await finished(api, "rs", 60)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
        assert [t["attempts"] for t in obj["status"]["trials"]] == [1, 1]
        assert fake.starts == {"DaskCluster/rs-dask-1": 1, "Job/rs-dask-1-runner": 1,
                               "RayJob/rs-ray-1": 1}
        # The second operator created nothing of the resumed trial, only the next trial's RayJob.
        assert sum(first.op.submissions.values()) == 2
        assert dict(second.op.submissions) == {"ns1/RayJob/rs-ray-1": 1}
        creates = [r for r in k8s.emulator.history
                   if r.method.value == "POST" and r.resource is not None
                   and r.resource.plural in ("jobs", "daskclusters", "rayjobs")]
        assert len(creates) == 3


async def test_delete_in_the_middle_stops_the_trial_and_removes_every_child(cluster):
    """A real Dask cluster and a real runner busy with a long trial; deleting the Benchmark
    kills the runner, stops the cluster and removes every child (finalizer)."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig) as fake, \
            running_operator(k8s.url, NS) as running:
        await api.apply(benchmark("del", frameworks=["dask"], workers=[1, 2],
                                  workload={"name": "tasks", "params": {"count": 200_000}},
                                  repeats=50))
        key = "Job/del-dask-1-runner"
        await wait_for(lambda: key in fake._procs, 60, "the runner process")
        proc = fake._procs[key]
        cluster_proc = fake._clusters["DaskCluster/del-dask-1"].proc
        assert await api.delete("/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks/del") == 200
        await wait_for(lambda: api.benchmark("del"), 1, "the object to remain (finalizer)")

        async def gone() -> bool:
            return await api.benchmark("del") is None
        await wait_for(gone, 30, "the Benchmark to be deleted")
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode < 0  # killed, not finished
        await asyncio.wait_for(cluster_proc.wait(), 60)
        for path in ("/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters", JOBS,
                     "/api/v1/namespaces/{ns}/configmaps"):
            assert [o["metadata"]["name"] for o in await api.items(path)
                    if o["metadata"]["name"].startswith("del-")] == []
        assert "Job/del-dask-2-runner" not in fake.starts  # the next trial never started
        assert ("ns1", "del") not in running.op.metrics._phases


async def test_a_cluster_that_never_gets_ready_times_out_and_the_rest_continue(cluster):
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True,
                               never_ready={"to-dask-1"}) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("to", frameworks=["dask"], workers=[1, 2],
                                  startupTimeoutSeconds=1))
        obj = await finished(api, "to", 60)
    st = obj["status"]
    assert st["phase"] == "Failed"
    first, second = st["trials"]
    assert first["state"] == "Failed"
    assert "timed out" in first["error"] and "startupTimeoutSeconds=1" in first["error"]
    assert "DaskCluster to-dask-1 (phase=Created)" in first["error"]
    assert second["state"] == "Succeeded"  # failurePolicy: continue
    assert "Job/to-dask-1-runner" not in fake.starts
    assert "1 trial(s) failed" in st["message"] and "dask x1" in st["message"]


async def test_a_job_that_never_finishes_times_out_and_policy_stop_skips_the_rest(cluster):
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()  # never set: the runner never finishes
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake, \
            running_operator(k8s.url, NS, run_grace_seconds=1):
        await api.apply(benchmark("hang", frameworks=["ray"], workers=[1, 2], timeoutSeconds=1,
                                  workload={"name": "knn"}, failurePolicy="stop"))
        obj = await finished(api, "hang", 60)
        await wait_for(lambda: "RayJob/hang-ray-1" not in fake._work, 10, "the RayJob's deletion")
    first, second = obj["status"]["trials"]
    assert first["state"] == "Failed" and "did not finish within 2 s" in first["error"]
    assert second["state"] == "Skipped" and "failurePolicy: stop" in second["error"]
    assert obj["status"]["phase"] == "Failed"
    assert "RayJob/hang-ray-2" not in fake.starts


async def test_a_runner_that_crashes_without_results_fails_its_trial(cluster):
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, crash={"cr-dask-1"}), \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("cr", frameworks=["dask", "ray"], workers=[1]))
        obj = await finished(api, "cr", 60)
    dask, ray = obj["status"]["trials"]
    assert dask["state"] == "Failed"
    assert dask["error"] == ("runner Job cr-dask-1-runner failed: BackoffLimitExceeded: Job has "
                             "reached the specified backoff limit "
                             "(the runner published no results)")
    assert ray["state"] == "Succeeded"


@pytest.mark.slow
async def test_a_real_runner_whose_workload_fails_reports_the_engine_error(cluster, tmp_path):
    """The real runner on a real Dask cluster; the dataset file does not exist: the runner
    exits 2 (a usage error) after publishing the error, and the trial carries that message
    rather than the Job's generic reason."""
    k8s, api, kubeconfig = cluster
    missing = tmp_path / "nope.csv"
    async with FakeControllers(k8s.url, NS, kubeconfig) as fake, running_operator(k8s.url, NS):
        await api.apply(benchmark("bad", frameworks=["dask"], workers=[1],
                                  dataset={"name": "file", "path": str(missing)}))
        obj = await finished(api, "bad", 120)
    (t,) = obj["status"]["trials"]
    assert t["state"] == "Failed"
    assert t["error"].startswith(f"dataset.path: file '{missing}' does not exist"), t["error"]
    assert "BackoffLimitExceeded" in t["error"]  # the Job's reason comes second
    assert t["results"] == []
    assert fake.exits["Job/bad-dask-1-runner"] == 2


@pytest.mark.parametrize(("spec", "field"), [
    ({"workload": {"name": "knn", "params": {"n_neighbors": "five"}}},
     "spec.workloads.0.params.n_neighbors"),
    ({"dataset": {"name": "s3", "uri": "s3:///digits.csv"}}, "spec.dataset.uri"),
    ({"workers": [1, 4]}, "spec.workers"),  # the namespace quota allows 5 pods
])
async def test_semantically_invalid_specs_fail_once_naming_the_field(cluster, spec, field):
    k8s, api, kubeconfig = cluster
    code, _ = await api.request("POST", "/api/v1/namespaces/{ns}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "small", "namespace": NS},
        "spec": {"hard": {"pods": "5"}}})
    assert code == 201
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True) as fake, \
            running_operator(k8s.url, NS) as running:
        await api.apply(benchmark("inv", frameworks=["dask"], **{"workers": [1], **spec}))
        obj = await finished(api, "inv", 30)
        # The operator goes on working: a valid Benchmark after it succeeds.
        await api.apply(benchmark("ok", frameworks=["dask"], workers=[1]))
        ok = await finished(api, "ok", 30)
    st = obj["status"]
    assert st["phase"] == "Failed" and st["reason"] == "InvalidSpec"
    assert st["message"].startswith(field), st["message"]
    assert st["conditions"][0]["reason"] == "InvalidSpec" and st["trials"] == []
    assert ok["status"]["phase"] == "Succeeded"
    assert not [k for k in fake.starts if "inv-" in k]  # nothing was created for it
    status_patches = [r for r in k8s.emulator.history if r.method.value == "PATCH"
                      and r.name == "inv" and r.subresource == "status"]
    assert len(status_patches) == 1  # set once, no retry loop
    assert not running.op.metrics.errors._metrics  # no reconcile errors


@pytest.mark.parametrize(("spec", "cause"), [
    ({"frameworks": ["spark"], "workers": [1]}, "spec.frameworks"),
    ({"frameworks": ["ray"], "workers": [0]}, "spec.workers"),
    ({"frameworks": ["ray"], "workers": [1], "failurePolicy": "retry"}, "spec.failurePolicy"),
])
async def test_schema_invalid_specs_are_rejected_by_the_crd(cluster, spec, cause):
    _k8s, api, _ = cluster
    code, body = await api.apply(benchmark("x", **spec))
    assert code == 422 and body["reason"] == "Invalid"
    assert any(c["field"].startswith(cause) for c in body["details"]["causes"]), body


async def test_a_killed_runner_is_retried_when_the_spec_allows_it(cluster):
    """trialRetries: 1. The first runner dies without results; the trial's objects are
    removed and it runs again; the failure is kept; the next trial is unaffected."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True,
                               crash={"rt-dask-1": 1}) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("rt", frameworks=["dask", "ray"], workers=[1], trialRetries=1))
        obj = await finished(api, "rt", 60)
    dask, ray = obj["status"]["trials"]
    assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
    assert dask["state"] == "Succeeded" and dask["attempts"] == 2 and dask["results"]
    (previous,) = dask["previousErrors"]
    assert previous.startswith(
        "attempt 1: runner Job rt-dask-1-runner failed: BackoffLimitExceeded")
    assert fake.starts["Job/rt-dask-1-runner"] == 2 and fake.starts["DaskCluster/rt-dask-1"] == 2
    assert ray["attempts"] == 1 and "previousErrors" not in ray


async def test_retries_run_out_and_the_trial_fails_with_every_reason(cluster):
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, crash={"ro-dask-1"}) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("ro", frameworks=["dask", "ray"], workers=[1], trialRetries=1))
        obj = await finished(api, "ro", 60)
    dask, ray = obj["status"]["trials"]
    assert dask["state"] == "Failed" and dask["attempts"] == 2
    assert len(dask["previousErrors"]) == 1 and "BackoffLimitExceeded" in dask["error"]
    assert fake.starts["Job/ro-dask-1-runner"] == 2
    assert ray["state"] == "Succeeded"  # later trials continue
