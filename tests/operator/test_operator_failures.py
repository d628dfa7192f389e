"""Trials whose pods cannot be made or cannot start fail at once, with the reason, instead of
waiting out their deadlines; a namespace without the runner's ServiceAccount fails the
Benchmark before anything is created. The real operator against the emulator; the fake
controllers refuse or stall pods the way the API server, the Job/ReplicaSet controllers,
KubeRay and the kubelet do (see tests/support/fake_controllers.py)."""
from __future__ import annotations

import asyncio
import base64
import time

from support.fake_controllers import (
    RUNNER_ACCOUNT,
    FakeControllers,
    kuberay_token_env,
    kuberay_validate_auth,
    wait_for,
)
from support.operator_harness import benchmark, finished, running_operator

NS = "ns1"
EVENTS = "/api/v1/namespaces/{ns}/events"
SECRETS = "/api/v1/namespaces/{ns}/secrets"
CHILDREN = ("/apis/ray.io/v1/namespaces/{ns}/rayjobs", "/apis/batch/v1/namespaces/{ns}/jobs",
            "/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters")
# Long deadlines: a failure detected only by them would time the test out.
SLOW = {"startupTimeoutSeconds": 600, "timeoutSeconds": 600}


async def _events(api, name: str) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in await api.items(EVENTS)
            if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "Benchmark"]


async def _events_with(api, name: str, *wanted: tuple[str, str]) -> list[tuple[str, str, str]]:
    """The Benchmark's events once every (type, reason) in ``wanted`` is among them: Kopf posts
    events in the background, so the last ones may arrive after the status says finished."""
    async def complete() -> list[tuple[str, str, str]] | None:
        events = await _events(api, name)
        return events if set(wanted) <= {(t, r) for t, r, _ in events} else None

    return await wait_for(complete, 30, f"events {wanted} on {name}")


def _conditions(obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj["status"]["conditions"]}


async def test_a_namespace_without_the_runner_account_fails_the_benchmark_at_once(cluster):
    """Cluster-wide mode: the chart makes testbed-runner only in its runner namespaces. A
    Benchmark elsewhere fails once, naming the account and the fix; nothing is created."""
    k8s, api, kubeconfig = cluster
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, runner_account=False) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("nosa", frameworks=["ray", "dask"], workers=[1], **SLOW))
        obj = await finished(api, "nosa", 30)
        st = obj["status"]
        assert st["phase"] == "Failed" and st["reason"] == "RunnerServiceAccountMissing"
        assert (f'ServiceAccount "{RUNNER_ACCOUNT}" does not exist in namespace "{NS}"'
                in st["message"])
        assert "runnerNamespaces" in st["message"] and st["trials"] == []
        assert _conditions(obj)["Failed"] == ("True", "RunnerServiceAccountMissing")
        assert _conditions(obj)["Succeeded"][0] == "False"
        for path in CHILDREN:
            assert await api.items(path) == []
        assert fake.starts == {}
        events = await wait_for(lambda: _events(api, "nosa"), 10, "the Benchmark's event")
        assert [(t, r) for t, r, _ in events] == [("Warning", "RunnerServiceAccountMissing")]
        await asyncio.sleep(1)  # written once, not retried
        patches = [r for r in k8s.emulator.history if r.method.value == "PATCH"
                   and r.name == "nosa" and r.subresource == "status"]
        assert len(patches) == 1


async def test_a_runner_job_whose_pod_is_refused_fails_its_trial_with_the_reason(cluster):
    """The Job controller cannot create the runner's pod (here a quota refusal): its
    FailedCreate event becomes the trial's error within seconds, the next trial runs."""
    k8s, api, kubeconfig = cluster
    quota = "exceeded quota: small, requested: pods=1, used: pods=5, limited: pods=5"
    t0 = time.monotonic()
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True,
                               reject_pods={"fc-dask-1-runner": quota}) as fake, \
            running_operator(k8s.url, NS, failure_check_seconds=0.5):
        await api.apply(benchmark("fc", frameworks=["dask", "ray"], workers=[1], **SLOW))
        obj = await finished(api, "fc", 60)
        events = await _events_with(api, "fc", ("Warning", "TrialFailed"),
                                    ("Normal", "TrialSucceeded"))
    assert time.monotonic() - t0 < 60
    dask, ray = obj["status"]["trials"]
    assert dask["state"] == "Failed", dask
    assert dask["error"].startswith(
        'Job fc-dask-1-runner could not create its pod: FailedCreate: Error creating: pods '
        f'"fc-dask-1-runner-" is forbidden: {quota}'), dask["error"]
    assert ray["state"] == "Succeeded"
    assert "Job/fc-dask-1-runner" not in fake.exits  # it never ran
    reasons = [(t, r) for t, r, _ in events]
    assert ("Warning", "TrialFailed") in reasons and ("Normal", "TrialSucceeded") in reasons
    # The cluster was ready; the runner was not.
    assert ("Warning", "ClusterNotReady") not in reasons


async def test_a_ray_head_refused_for_a_missing_account_fails_as_cluster_not_ready(cluster):
    """The runner's account disappears after planning: KubeRay cannot create the head pod
    (FailedToCreateHeadPod on the RayCluster, the ServiceAccount admission plugin's message).
    The trial fails with it at once and says the cluster never became ready."""
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake, \
            running_operator(k8s.url, NS, failure_check_seconds=0.5):
        await api.apply(benchmark("gone", frameworks=["dask", "ray"], workers=[1], **SLOW))
        await wait_for(lambda: fake.starts["Job/gone-dask-1-runner"] == 1, 30, "the dask runner")
        account = f"/api/v1/namespaces/{{ns}}/serviceaccounts/{RUNNER_ACCOUNT}"
        assert await api.delete(account) == 200
        gate.set()
        obj = await finished(api, "gone", 60)
        events = await _events_with(api, "gone", ("Warning", "ClusterNotReady"))
    dask, ray = obj["status"]["trials"]
    assert dask["state"] == "Succeeded"
    assert ray["state"] == "Failed" and not ray.get("clusterReadyAt")
    assert ray["error"].startswith("RayCluster gone-ray-1-raycluster could not create its pod: "
                                   "FailedToCreateHeadPod: Failed to create head Pod"), ray["error"]
    assert f'serviceaccount "{RUNNER_ACCOUNT}" not found' in ray["error"]
    assert any(t == "Warning" and r == "ClusterNotReady" and "FailedToCreateHeadPod" in m
               for t, r, m in events), events


async def test_a_pod_that_cannot_pull_its_image_fails_its_trial(cluster):
    """The kubelet cannot pull the scheduler's image (ImagePullBackOff): the trial fails with
    the pod's reason long before startupTimeoutSeconds."""
    k8s, api, kubeconfig = cluster
    why = 'Back-off pulling image "testbed-runner:nope"'
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True,
                               stuck_pods={"ip-dask-1": ("ImagePullBackOff", why)}), \
            running_operator(k8s.url, NS, failure_check_seconds=0.5):
        await api.apply(benchmark("ip", frameworks=["dask"], workers=[1], **SLOW))
        obj = await finished(api, "ip", 60)
    (t,) = obj["status"]["trials"]
    assert t["state"] == "Failed"
    assert t["error"] == (f"pod ip-dask-1-scheduler-6d5f7c9b8-x2x4p cannot run container main: "
                          f"ImagePullBackOff: {why} (the runner published no results)")
    assert _conditions(obj)["Failed"] == ("True", "TrialFailed")


class _Kube:
    """Just the two lists PodFailureWatch reads."""

    def __init__(self, events, pods=()):
        self.events, self.pods, self.calls = list(events), list(pods), []

    async def list(self, api_version, kind, ns, selector="", fields=""):
        self.calls.append((kind, selector, fields))
        return self.events if kind == "Event" else self.pods


def _event(kind, name, reason, when, message="Error creating: no"):
    return {"involvedObject": {"kind": kind, "name": name}, "reason": reason, "type": "Warning",
            "message": message, "lastTimestamp": when}


async def test_the_failure_watch_reads_only_this_attempts_controllers():
    """Only the trial's own controllers count (not another trial whose name starts alike),
    only events from this attempt on (a retry is not failed by attempt 1's), and the checks
    are throttled."""
    from testbed_operator.podwatch import PodFailureWatch

    owners = [("Job", "t-dask-1-runner"), ("ReplicaSet", "t-dask-1-scheduler-[a-z0-9]+")]
    since = 2_000_000_000.0  # 2033-05-18T03:33:20Z
    events = [_event("Job", "t-dask-1-runner", "FailedCreate", "2033-05-18T03:33:19Z"),  # attempt 1
              _event("Job", "t-dask-10-runner", "FailedCreate", "2033-05-18T03:33:30Z"),
              _event("ReplicaSet", "t-dask-1-scheduler-abc12", "SuccessfulCreate",
                     "2033-05-18T03:33:30Z"),
              _event("Pod", "t-dask-1-runner-x", "FailedCreate", "2033-05-18T03:33:30Z")]
    kube = _Kube(events)
    watch = PodFailureWatch(kube, "ns", "t-dask-1", since, 60, owners)
    assert await watch() is None
    assert kube.calls == [("Event", "", "type=Warning"), ("Pod", "testbed.dev/trial=t-dask-1", "")]
    kube.events.append(_event("ReplicaSet", "t-dask-1-scheduler-abc12", "FailedCreate",
                              "2033-05-18T03:33:21Z", "Error creating: quota"))
    assert await watch() is None and len(kube.calls) == 2  # throttled: within `every`
    watch._next = 0
    assert await watch() == ("ReplicaSet t-dask-1-scheduler-abc12 could not create its pod: "
                             "FailedCreate: Error creating: quota")
    stuck = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}],
        "initContainerStatuses": [{"name": "init", "state": {"waiting": {
            "reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}}}]}}
    watch = PodFailureWatch(_Kube([], [stuck]), "ns", "t-dask-1", since, 0, owners)
    assert await watch() == ('pod p cannot run container init: CreateContainerConfigError: '
                             'secret "s3" not found')
    stuck["status"]["initContainerStatuses"] = []
    assert await watch() is None  # ContainerCreating resolves by itself


UNSCHEDULABLE = ("0/1 nodes are available: 1 Insufficient cpu. "
                 "preemption: 0/1 nodes are available: "
                 "1 No preemption victims found for incoming pod.")


async def test_a_start_up_timeout_names_the_schedulers_reason():
    """A pod the scheduler could not place (PodScheduled False, as kube-scheduler sets it:
    pkg/scheduler/schedule_one.go) is reported with the scheduler's reason, not just as "not
    Ready": on a real node a trial that asks for more CPU than is free waits out its start-up
    timeout, and the message must say why (tests/cluster/test_real_cluster.py saw it)."""
    from testbed_operator.podwatch import PodFailureWatch

    pending = {"metadata": {"name": "t-ray-1-workers-worker-abcde"}, "status": {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                            "reason": "Unschedulable", "message": UNSCHEDULABLE}]}}
    running = {"metadata": {"name": "t-ray-1-head-x"}, "status": {
        "phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"},
                                           {"type": "Ready", "status": "False"}]}}
    probe = _event("Pod", "t-ray-1-head-x", "Unhealthy", "2033-05-18T03:33:30Z",
                   "Readiness probe failed: connection refused")
    watch = PodFailureWatch(_Kube([probe], [pending, running]), "ns", "t-ray-1", None, 0, [])
    assert await watch.not_ready() == (
        "pod t-ray-1-head-x not Ready (Readiness probe failed: connection refused); "
        f"pod t-ray-1-workers-worker-abcde not scheduled (Unschedulable: {UNSCHEDULABLE})")


# -- KubeRay's token auth, as the fake plays it ---------------------------------------------------
def test_the_fake_kuberay_validates_auth_like_kuberay():
    """utils/validation.go: token auth needs rayVersion >= 2.52.0; a RayJob may not use
    enableK8sTokenAuth; disabled needs nothing."""
    assert kuberay_validate_auth({"authOptions": {"mode": "token"}, "rayVersion": "2.60.0"}) is None
    assert kuberay_validate_auth({"authOptions": {"mode": "disabled"}}) is None
    assert kuberay_validate_auth({}) is None
    assert "RayVersion was not specified" in kuberay_validate_auth(
        {"authOptions": {"mode": "token"}})
    assert "minimum Ray version is 2.52.0, got 2.51.1" in kuberay_validate_auth(
        {"authOptions": {"mode": "token"}, "rayVersion": "2.51.1"})
    assert "not supported for RayJob" in kuberay_validate_auth(
        {"authOptions": {"mode": "token", "enableK8sTokenAuth": True}, "rayVersion": "2.60.0"})
    env = kuberay_token_env([{"name": "A", "value": "1"}], "c1", {"mode": "token"})
    assert env == [{"name": "A", "value": "1"}, {"name": "RAY_AUTH_MODE", "value": "token"},
                   {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                       "name": "c1", "key": "auth_token"}}}]
    mine = [{"name": "RAY_AUTH_MODE", "value": "disabled"}]
    assert kuberay_token_env(mine, "c1", {"mode": "disabled"}) == mine


async def test_a_ray_trial_runs_with_kuberays_token_and_without_it_when_disabled(cluster):
    """authMode token (the default): the RayJob's cluster gets a Secret with a random token and
    its pods (and so the driver) RAY_AUTH_MODE=token with that token; the Secret goes with the
    cluster. authMode disabled: no Secret, RAY_AUTH_MODE=disabled."""
    k8s, api, kubeconfig = cluster
    gate = asyncio.Event()
    async with FakeControllers(k8s.url, NS, kubeconfig, fast=True, gate=gate) as fake, \
            running_operator(k8s.url, NS):
        await api.apply(benchmark("tok", frameworks=["ray"], workers=[1]))
        await wait_for(lambda: "RayJob/tok-ray-1" in fake.auth_env, 30, "the Ray pods' env")
        (secret,) = await api.items(SECRETS)
        assert secret["metadata"]["name"] == "tok-ray-1-raycluster"
        token = base64.b64decode(secret["data"]["auth_token"]).decode()
        assert len(base64.b64decode(token)) == 32
        assert fake.auth_env["RayJob/tok-ray-1"] == {"RAY_AUTH_MODE": "token",
                                                     "RAY_AUTH_TOKEN": token}
        gate.set()
        obj = await finished(api, "tok", 30)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
        await wait_for(lambda: _no_secrets(api), 10, "the Secret to go with the cluster")
        await api.apply(benchmark("open", frameworks=["ray"], workers=[1],
                                  ray={"authMode": "disabled"}))
        obj = await finished(api, "open", 30)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]["message"]
        assert fake.auth_env["RayJob/open-ray-1"] == {"RAY_AUTH_MODE": "disabled"}
        assert await api.items(SECRETS) == []


async def _no_secrets(api) -> bool:
    return await api.items(SECRETS) == []
