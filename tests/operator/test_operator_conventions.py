"""Kubernetes conventions the operator follows, against the emulator with the fast fake
runner: metav1.Condition-shaped conditions that tell success from failure (what
``kubectl wait --for=condition=...`` reads), Events with their own reasons (what
``kubectl describe`` shows), a quiet deletion, and the operator's own name on its requests."""
from __future__ import annotations

import asyncio
import logging

from support.fake_controllers import FakeControllers, wait_for
from support.operator_harness import benchmark, finished, running_operator

NS = "ns1"
EVENTS = "/api/v1/namespaces/{ns}/events"


async def _events(api, name: str) -> list[dict]:
    return [e for e in await api.items(EVENTS)
            if e["involvedObject"]["kind"] == "Benchmark" and e["involvedObject"]["name"] == name]


async def _events_until(api, name: str, reason: str) -> list[dict]:
    """The Benchmark's events once one with ``reason`` has been posted (bounded)."""
    async def posted() -> list[dict] | None:
        events = await _events(api, name)
        return events if any(e["reason"] == reason for e in events) else None

    return await wait_for(posted, 30, f"the {reason} event on {name}")


def _wait_for_condition(obj, kind: str) -> bool:
    """`kubectl wait --for=condition=<kind>`: the condition of that type has status True."""
    return any(c["type"] == kind and c["status"] == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def test_conditions_and_events_tell_success_from_failure(cluster):
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, crash={"bad-dask-1"}), \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("good", frameworks=["ray", "dask"], workers=[1]))
        await api.apply(benchmark("bad", frameworks=["dask"], workers=[1]))
        good, bad = await finished(api, "good", 60), await finished(api, "bad", 60)
        # Kopf posts events in the background, in order: wait for each Benchmark's last one.
        good_events = await _events_until(api, "good", "BenchmarkSucceeded")
        bad_events = await _events_until(api, "bad", "BenchmarkFailed")
    assert good["status"]["phase"] == "Succeeded" and bad["status"]["phase"] == "Failed"
    assert _wait_for_condition(good, "Succeeded") and not _wait_for_condition(good, "Failed")
    assert _wait_for_condition(bad, "Failed") and not _wait_for_condition(bad, "Succeeded")
    for obj in (good, bad):
        conds = obj["status"]["conditions"]
        assert sorted(c["type"] for c in conds) == ["Failed", "Running", "Succeeded"]
        for c in conds:
            assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime",
                              "observedGeneration"}
            assert c["observedGeneration"] == obj["metadata"]["generation"]
        assert not _wait_for_condition(obj, "Running")
        assert obj["status"]["currentTrial"] == ""
    failed_condition = next(c for c in bad["status"]["conditions"] if c["type"] == "Failed")
    assert failed_condition["reason"] == "TrialFailed"
    # Events: what happened, each with its reason; none of Kopf's generic "Logging".
    reasons = [(e["type"], e["reason"])
               for e in sorted(good_events, key=lambda e: e["metadata"]["resourceVersion"])]
    assert reasons == [("Normal", "TrialStarted"), ("Normal", "ClusterReady"),
                       ("Normal", "TrialSucceeded"),
                       ("Normal", "TrialStarted"), ("Normal", "ClusterReady"),
                       ("Normal", "TrialSucceeded"),
                       ("Normal", "BenchmarkSucceeded")], reasons
    assert {(e["type"], e["reason"]) for e in bad_events} >= {("Warning", "TrialFailed"),
                                                              ("Warning", "BenchmarkFailed")}
    failed = next(e for e in bad_events if e["reason"] == "TrialFailed")
    assert "BackoffLimitExceeded" in failed["message"]
    assert failed["message"].startswith("trial dask x1")
    for e in good_events + bad_events:
        assert e["source"]["component"] == "testbed-operator" and e["reason"] != "Logging"
        assert e["involvedObject"]["uid"]


async def test_a_deleted_benchmark_stops_quietly(cluster, caplog):
    """Deleting a Benchmark mid-trial stops its daemon without Kopf's warning "Daemon 'trials'
    is cancelled" (in the log or as an Event): the daemon watches its stop flag and returns."""
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()  # the runner never finishes by itself
    caplog.set_level(logging.DEBUG)
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake, \
            running_operator(k8s.url, NS) as running:
        await api.apply(benchmark("quiet", frameworks=["dask"], workers=[1]))
        await wait_for(lambda: fake.starts["Job/quiet-dask-1-runner"] == 1, 30, "the runner Job")

        async def finalized():  # else the deletion may skip the operator's delete handler
            return ((await api.benchmark("quiet")) or {}).get("metadata", {}).get("finalizers")
        await wait_for(finalized, 30, "the finalizer")
        t0 = asyncio.get_running_loop().time()
        quiet = "/apis/testbed.dev/v1alpha1/namespaces/{ns}/benchmarks/quiet"
        assert await api.delete(quiet) == 200

        async def gone() -> bool:
            return await api.benchmark("quiet") is None
        await wait_for(gone, 30, "the Benchmark to be deleted")
        took = asyncio.get_running_loop().time() - t0
        events = await _events_until(api, "quiet", "ClusterReady")
        assert not running.op.slots.held
    assert took < 5  # the daemon stopped at once, well before Kopf's cancellation backoff
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in logged if "cancelled" in m or "did not exit" in m], logged
    assert not [e for e in events if e["type"] != "Normal" or "cancel" in e["message"]], \
        [(e["type"], e["reason"], e["message"]) for e in events]
    assert [e["reason"] for e in events] == ["TrialStarted", "ClusterReady"]


async def test_requests_carry_the_operators_name(cluster):
    """Our client's requests say User-Agent testbed-operator/<version> and its writes
    fieldManager=testbed-operator, so managedFields and audit logs name the operator (not the
    client library's OpenAPI-Generator); Kopf's own requests say kopf/<version>."""
    from testbed_operator.kube import FIELD_MANAGER, USER_AGENT

    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True), running_operator(k8s.url, NS):
        await api.apply(benchmark("who", frameworks=["ray"], workers=[1]))
        await finished(api, "who", 30)
    ours = [r for r in k8s.emulator.history if r.headers.get("User-Agent") == USER_AGENT]
    agents = {r.headers.get("User-Agent", "").split("/")[0] for r in k8s.emulator.history
              if r.resource is not None and r.resource.plural in ("benchmarks", "rayjobs")}
    assert "OpenAPI-Generator" not in agents and {"testbed-operator", "kopf"} <= agents
    status = [r for r in ours if r.method.value == "PATCH" and r.subresource == "status"]
    creates = [r for r in ours if r.method.value == "POST"]
    assert status and creates
    assert {r.params.get("fieldManager") for r in status + creates} == {FIELD_MANAGER}
