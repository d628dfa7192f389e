"""The in-memory Kubernetes API of tests/k8s_emulator.py.

Each gap test runs against stock kmock 0.8 *and* ``PatchedEmulator`` and asserts both
behaviours: if a kmock upgrade fixes a gap, its stock case fails and the subclass can shrink.
The ``kubernetes`` client tests run the sync client in threads (``asyncio.to_thread``), since
the emulator serves on the test's own event loop. No sleeps: tests await events or sentinels."""
import asyncio
import json
from contextlib import asynccontextmanager

import aiohttp
import kmock
import kubernetes
import pytest
import yaml
from kmock import KubernetesEmulator, ResourceInfo, Server
from kubernetes.client.rest import ApiException

from k8s_emulator import (BENCHMARK_CRD, KUBERAY_DIR, PatchedEmulator, load_crds, match_labels,
                          serve_emulator, write_kubeconfig)

pytestmark = pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")  # kmock 0.8

NS = "ns1"
BENCH = kmock.resource("testbed.dev/v1alpha1/benchmarks")
B = f"/apis/testbed.dev/v1alpha1/namespaces/{NS}/benchmarks"
CM = f"/api/v1/namespaces/{NS}/configmaps"
GOOD = {"apiVersion": "testbed.dev/v1alpha1", "kind": "Benchmark", "metadata": {"name": "b1"},
        "spec": {"frameworks": ["ray"], "workers": [1, 2]}}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONP = {"Content-Type": "application/json-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}
GUARD = 5  # seconds: only a safety net for awaits that must complete much sooner


def _bench(name, **extra):
    return {**GOOD, "metadata": {"name": name, "namespace": NS}, **extra}


def _setup(kind, k):
    k.resources.load_bundled()
    if kind == "stock":
        k.resources[BENCH] = ResourceInfo(kind="Benchmark", namespaced=True, subresources={"status"},
                                          verbs={"get", "list", "watch", "create", "patch", "delete"})
    else:
        k.add_crd(yaml.safe_load(BENCHMARK_CRD.read_text()))


@asynccontextmanager
async def _serve(kind, cls=None):
    cls = cls or (KubernetesEmulator if kind == "stock" else PatchedEmulator)
    async with cls() as k, Server(k) as srv:
        _setup(kind, k)
        async with aiohttp.ClientSession(str(srv.url)) as s:
            yield k, s


@pytest.fixture(params=["stock", "patched"])
def kind(request):
    return request.param


@pytest.fixture
async def emu(kind):
    async with _serve(kind) as (k, s):
        yield kind, k, s


async def call(s, method, url, **kw):
    async with s.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None)


class ObservedBus(kmock.Bus):
    """An event bus that tells when a watcher subscribes (stock kmock subscribes late)."""

    def __init__(self):
        super().__init__()
        self.subscribed = asyncio.Event()

    async def mark(self):
        marker = await super().mark()
        self.subscribed.set()
        return marker


async def _names_until(response, last):
    """Read a watch stream up to (and including) the event for the object named ``last``."""
    events = []
    async with asyncio.timeout(GUARD):
        async for line in response.content:
            if line.strip():
                ev = json.loads(line)
                events.append((ev["type"], ev["object"]["metadata"]["name"]))
                if events[-1][1] == last:
                    return events
    return events


# ------------------------------------------------------------------------------------ the gaps
async def test_stamping(emu):
    kind, k, s = emu
    st, o = await call(s, "POST", B, json=GOOD)
    _, o2 = await call(s, "PATCH", B + "/b1", json={"spec": {"workers": [3]}}, headers=MERGE)
    _, o3 = await call(s, "PATCH", B + "/b1", json={"spec": {"workers": [3]}}, headers=MERGE)
    st_unknown, _ = await call(s, "POST", f"/apis/example.dev/v1/namespaces/{NS}/gadgets",
                               json={"metadata": {"name": "g"}})
    if kind == "stock":
        assert st == 200 and st_unknown == 200  # an undeclared resource springs into existence
        assert o["metadata"] == {"name": "b1"}  # no namespace, rv, uid, timestamp, generation
    else:
        assert st == 201 and st_unknown == 404
        m, m2 = o["metadata"], o2["metadata"]
        assert m["namespace"] == NS and m["uid"] and m["creationTimestamp"] and m["generation"] == 1
        assert int(m2["resourceVersion"]) > int(m["resourceVersion"])
        assert m2["generation"] == 2 and m2["uid"] == m["uid"]
        assert o3 == o2  # a no-op patch keeps the resourceVersion
        st, o4 = await call(s, "POST", B, json={**GOOD, "metadata": {"generateName": "b-"}})
        assert st == 201 and o4["metadata"]["name"].startswith("b-") and len(o4["metadata"]["name"]) == 7
        st, o5 = await call(s, "POST", B, json=GOOD)
        assert st == 409 and o5["reason"] == "AlreadyExists"


async def test_jsonpatch_test_op(emu):
    kind, k, s = emu
    await call(s, "POST", B, json=GOOD)
    st, o = await call(s, "PATCH", B + "/b1", headers=JSONP, data=json.dumps([
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]))
    if kind == "stock":
        assert st == 500 and o["reason"] == "JsonPatchTestFailed"  # Kopf cannot add finalizers
    else:
        assert st == 422 and o["reason"] == "Invalid"
        rv = (await call(s, "GET", B + "/b1"))[1]["metadata"]["resourceVersion"]
        st, o = await call(s, "PATCH", B + "/b1", headers=JSONP, data=json.dumps([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]))
        assert st == 200 and o["metadata"]["finalizers"] == ["x"]
        assert k.errors == []  # the deliberate 422 is not a server failure


async def test_finalizers_hold_the_deletion(emu):
    kind, k, s = emu
    await call(s, "POST", B, json={**GOOD, "metadata": {"name": "b1", "finalizers": ["x"]}})
    st, o = await call(s, "DELETE", B + "/b1")
    assert st == 200 and o["metadata"]["deletionTimestamp"]
    assert (await call(s, "GET", B + "/b1"))[0] == 200
    await call(s, "PATCH", B + "/b1", json={"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await call(s, "GET", B + "/b1"))[0] == 404


async def test_status_subresource(emu):
    kind, k, s = emu
    await call(s, "POST", B, json={**GOOD, "status": {"phase": "Succeeded"}})
    _, o1 = await call(s, "PATCH", B + "/b1", headers=MERGE,
                       json={"spec": {"workers": [5]}, "status": {"phase": "Failed"}})
    _, o2 = await call(s, "PATCH", B + "/b1/status", headers=MERGE,
                       json={"spec": {"workers": [7]}, "status": {"phase": "Running"}})
    if kind == "stock":
        assert o1["status"] == {"phase": "Failed"} and o2["spec"]["workers"] == [7]
    else:
        assert "status" not in o1 and o1["spec"]["workers"] == [5]  # POST dropped .status too
        assert o2["spec"]["workers"] == [5] and o2["status"] == {"phase": "Running"}
        assert o2["metadata"]["generation"] == 2  # a status change does not bump generation
        st, o = await call(s, "PATCH", B + "/b1/scale", json={"spec": {}}, headers=MERGE)
        assert st == 404


async def test_schema_validation(emu):
    kind, k, s = emu
    st, o = await call(s, "POST", B, json={**GOOD, "spec": {"frameworks": ["spark"], "workers": [0]}})
    if kind == "stock":
        assert st == 200
    else:
        assert st == 422 and o["kind"] == "Status" and o["code"] == 422 and o["reason"] == "Invalid"
        assert sorted(c["field"] for c in o["details"]["causes"]) == ["spec.frameworks.0", "spec.workers.0"]
        st, o = await call(s, "POST", B, json=GOOD)
        assert st == 201  # workers [1, 2] pass `minimum: 0, exclusiveMinimum: true` (draft 4)
        st, o = await call(s, "PATCH", B + "/b1/status", json={"status": {"phase": "Bogus"}}, headers=MERGE)
        assert st == 422
        st, o = await call(s, "PATCH", B + "/b1", json={"spec": {"unknownField": 1}}, headers=MERGE)
        assert st == 200 and "unknownField" not in o["spec"]  # pruned like the apiserver
        st, o = await call(s, "PATCH", B + "/b1/status", headers=MERGE,
                           json={"status": {"phase": "Running", "kopf": {"progress": {}}}})
        assert st == 200 and o["status"]["kopf"] == {"progress": {}}  # preserve-unknown-fields


async def test_watch_does_not_lose_events_between_snapshot_and_subscription(kind):
    """Stock kmock streams the snapshot and only then subscribes: a slow reader (back-pressure
    on the snapshot) loses whatever happens meanwhile. Here the stream pauses deterministically
    after the first snapshot event, which is where back-pressure would block it."""
    cls = KubernetesEmulator if kind == "stock" else PatchedEmulator

    class Gated(cls):
        async def _serve_watch(self, request):
            first = True
            async for item in super()._serve_watch(request):
                yield item
                if first and isinstance(item, dict):
                    first = False
                    self.paused.set()
                    await self.gate.wait()

    async with _serve(kind, Gated) as (k, s):
        k.paused, k.gate = asyncio.Event(), asyncio.Event()
        bus = k._buses[BENCH] = ObservedBus()
        await call(s, "POST", B, json=_bench("b0"))
        async with s.get(B, params={"watch": "true"}) as r:
            await asyncio.wait_for(k.paused.wait(), GUARD)  # the snapshot is being streamed
            await call(s, "POST", B, json=_bench("late"))
            k.gate.set()
            await asyncio.wait_for(bus.subscribed.wait(), GUARD)
            await call(s, "POST", B, json=_bench("sentinel"))
            events = await _names_until(r, "sentinel")
    names = [n for _, n in events]
    assert names == (["b0", "sentinel"] if kind == "stock" else ["b0", "late", "sentinel"])


async def test_watch_from_the_list_resource_version_sees_a_deletion_in_between(emu):
    kind, k, s = emu
    bus = k._buses[BENCH] = ObservedBus()
    await call(s, "POST", B, json=GOOD)
    _, lst = await call(s, "GET", B)
    rv = lst["metadata"]["resourceVersion"]
    await call(s, "DELETE", B + "/b1")  # happens between Kopf's LIST and WATCH
    async with s.get(B, params={"watch": "true", "resourceVersion": rv}) as r:
        await asyncio.wait_for(bus.subscribed.wait(), GUARD)
        await call(s, "POST", B, json=_bench("sentinel"))
        events = await _names_until(r, "sentinel")
    if kind == "stock":
        assert rv == "..." and events == [("ADDED", "sentinel")]
    else:
        assert events == [("DELETED", "b1"), ("ADDED", "sentinel")]


async def test_watch_honours_timeout_seconds(emu):
    kind, k, s = emu
    async with s.get(B, params={"watch": "true", "timeoutSeconds": "1"}) as r:
        try:
            async with asyncio.timeout(1.5 if kind == "stock" else GUARD):
                assert await r.content.read() == b""  # EOF
                ended = True
        except TimeoutError:
            ended = False
    assert ended == (kind == "patched")


async def test_watch_true_spelled_like_python(emu):
    kind, k, s = emu
    bus = k._buses[BENCH] = ObservedBus()
    async with s.get(B, params={"watch": "True"}) as r:  # what the kubernetes client sends
        if kind == "stock":
            assert (await r.json())["items"] == []  # a one-shot list, not a stream
        else:
            await asyncio.wait_for(bus.subscribed.wait(), GUARD)
            await call(s, "POST", B, json=_bench("sentinel"))
            assert await _names_until(r, "sentinel") == [("ADDED", "sentinel")]


async def test_lists(emu):
    kind, k, s = emu
    await call(s, "POST", B, json=_bench("b1", metadata={"name": "b1", "labels": {"app": "x"}}))
    await call(s, "POST", B, json=_bench("b2", metadata={"name": "b2", "labels": {"app": "y"}}))
    st, o = await call(s, "GET", B, params={"labelSelector": "app=x"})
    names = [i["metadata"]["name"] for i in o["items"]]
    if kind == "stock":
        assert names == ["b1", "b2"] and o["metadata"]["resourceVersion"] == "..." and "kind" not in o
    else:
        assert names == ["b1"] and o["kind"] == "BenchmarkList"
        assert o["apiVersion"] == "testbed.dev/v1alpha1" and o["metadata"]["resourceVersion"] == "2"
        _, o = await call(s, "GET", B, params={"fieldSelector": "metadata.name!=b1"})
        assert [i["metadata"]["name"] for i in o["items"]] == ["b2"]
        assert (await call(s, "GET", B, params={"labelSelector": "app in (x"}))[0] == 400
        async with s.get(B, params={"watch": "true", "labelSelector": "=x"}) as r:
            assert r.status == 400


async def test_namespaces(emu):
    kind, k, s = emu
    st, o = await call(s, "POST", "/api/v1/namespaces",
                       json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}})
    if kind == "stock":
        assert st == 500  # kmock's path parser raises on /api/v1/namespaces
    else:
        assert st == 201 and "namespace" not in o["metadata"]
        st, o = await call(s, "GET", "/api/v1/namespaces/ns2")
        assert st == 200 and o["kind"] == "Namespace" and o["metadata"]["name"] == "ns2"
        _, o = await call(s, "GET", "/api/v1/namespaces")
        assert [i["metadata"]["name"] for i in o["items"]] == ["ns2"]
        assert (await call(s, "GET", "/api/v1/namespaces/ns2/configmaps"))[0] == 200


async def test_put(emu):
    kind, k, s = emu
    _, o = await call(s, "POST", B, json=GOOD)
    o = {**o, "spec": {**o["spec"], "workers": [4]}}
    st, o2 = await call(s, "PUT", B + "/b1", json=o)
    if kind == "stock":
        assert st == 404
    else:
        assert st == 200 and o2["spec"]["workers"] == [4] and o2["metadata"]["generation"] == 2
        st, o3 = await call(s, "PUT", B + "/b1", json=o)  # o carries the old resourceVersion
        assert st == 409 and o3["reason"] == "Conflict"


async def test_patch_content_types(emu):
    kind, k, s = emu
    await call(s, "POST", CM, json={"metadata": {"name": "c"}, "data": {"a": "1"}})
    await call(s, "POST", B, json=GOOD)
    st, o = await call(s, "PATCH", CM + "/c", json={"data": {"b": "2"}}, headers=SMP)
    assert st == 200 and o["data"] == {"a": "1", "b": "2"}  # both: applied as a merge patch
    results = [(await call(s, "PATCH", url, headers=headers, data=json.dumps(body)))[0]
               for url, headers, body in [
                   (CM + "/c", {"Content-Type": "application/json"}, {"data": {"c": "3"}}),
                   (CM + "/c", MERGE, [{"op": "add", "path": "/data/d", "value": "4"}]),
                   (CM + "/c", JSONP, {"data": {"e": "5"}}),
                   (CM + "/c", SMP, {"data": {"$patch": "replace"}}),
                   (B + "/b1", SMP, {"spec": {"workers": [3]}}),
                   (CM + "/c", {"Content-Type": "application/apply-patch+yaml"}, {"data": {"f": "6"}}),
               ]]
    if kind == "stock":  # the body's shape decides; the content type is ignored
        assert results == [200, 200, 200, 200, 200, 200]
    else:
        assert results == [415, 400, 400, 400, 415, 415]


async def test_no_garbage_collection_of_owned_objects(emu):
    """Neither emulator has a garbage collector: the operator must delete its children itself
    (a real cluster would cascade via ownerReferences; tests must not rely on that)."""
    kind, k, s = emu
    _, owner = await call(s, "POST", B, json=GOOD)
    ref = {"apiVersion": GOOD["apiVersion"], "kind": "Benchmark", "name": "b1",
           "uid": owner["metadata"].get("uid", "no-uid"), "controller": True}
    await call(s, "POST", CM, json={"metadata": {"name": "child", "ownerReferences": [ref]}})
    assert (await call(s, "DELETE", B + "/b1"))[0] == 200
    assert (await call(s, "GET", B + "/b1"))[0] == 404
    st, child = await call(s, "GET", CM + "/child")
    assert st == 200 and child["metadata"]["ownerReferences"] == [ref]


def test_label_selector_syntax():
    labels = {"app": "x", "tier": "db"}
    for selector, ok in [("", True), ("app=x", True), ("app==x", True), ("app!=x", False),
                         ("app=x,tier=web", False), ("app in (x, y)", True), ("app notin (x,y)", False),
                         ("tier notin (web)", True), ("missing notin (a)", True), ("missing in (a)", False),
                         ("app", True), ("!app", False), ("!missing", True), ("app=x,tier in (db,web)", True)]:
        assert match_labels(labels, selector) == ok, selector
    with pytest.raises(ValueError):
        match_labels(labels, "app in (x")


# --------------------------------------------------------------------------- serve_emulator
async def test_serve_emulator_registers_the_crds_and_the_namespace(tmp_path):
    async with serve_emulator("bench") as env:
        k = env.emulator
        assert env.url == str(env.server.url).rstrip("/") and env.url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(env.url) as s:
            assert (await call(s, "GET", "/api/v1/namespaces/bench"))[0] == 200
            _, v = await call(s, "GET", "/apis/ray.io/v1")
            assert {"rayclusters", "rayclusters/status", "rayjobs", "rayjobs/status"} <= \
                {r["name"] for r in v["resources"]}
            _, v = await call(s, "GET", "/apis/kubernetes.dask.org/v1")
            names = {r["name"] for r in v["resources"]}
            assert {"daskclusters", "daskjobs", "daskworkergroups", "daskautoscalers"} <= names
            assert "daskclusters/status" not in names  # DaskCluster status goes via the main endpoint
            _, o = await call(s, "GET", "/api/v1/namespaces/bench/resourcequotas")
            assert o["kind"] == "ResourceQuotaList" and o["items"] == []

            dc = "/apis/kubernetes.dask.org/v1/namespaces/bench/daskclusters"
            st, _ = await call(s, "POST", dc, json={
                "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster", "metadata": {"name": "d"},
                "spec": {"worker": {"replicas": 1, "spec": {"containers": []}},
                         "scheduler": {"spec": {"containers": []}, "service": {}}}})
            assert st == 201
            st, o = await call(s, "PATCH", dc + "/d", json={"status": {"phase": "Running"}}, headers=MERGE)
            assert st == 200 and o["status"]["phase"] == "Running"

            rj = "/apis/ray.io/v1/namespaces/bench/rayjobs"
            body = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "j"},
                    "spec": {"entrypoint": "python -c 1", "shutdownAfterJobFinishes": "yes"}}
            st, o = await call(s, "POST", rj, json=body)
            if KUBERAY_DIR.is_dir():  # the real KubeRay v1.7.0 schema
                assert st == 422 and [c["field"] for c in o["details"]["causes"]] == \
                    ["spec.shutdownAfterJobFinishes"]
                body["spec"]["shutdownAfterJobFinishes"] = True
                st, o = await call(s, "POST", rj, json=body)
            assert st == 201

            # A CRD POSTed at runtime is served too.
            crd = yaml.safe_load(BENCHMARK_CRD.read_text())
            crd["metadata"]["name"] = "widgets.example.dev"
            crd["spec"].update(group="example.dev", names={"kind": "Widget", "plural": "widgets"})
            assert (await call(s, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                               json=crd))[0] == 201
            assert (await call(s, "GET", "/apis/example.dev/v1alpha1/namespaces/bench/widgets"))[0] == 200
    assert "testbed.dev/v1alpha1/benchmarks" in load_crds(PatchedEmulator())


async def test_kubeconfig_works_with_the_kubernetes_client(tmp_path):
    async with serve_emulator() as env:
        path = write_kubeconfig(tmp_path / "kubeconfig", env.url, env.namespace)
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(path), client_configuration=cfg)
        assert cfg.host == env.url
        _, ctx = kubernetes.config.list_kube_config_contexts(config_file=str(path))
        assert ctx["context"]["namespace"] == "ns1"
        with kubernetes.client.ApiClient(cfg) as api:
            nss = await asyncio.to_thread(kubernetes.client.CoreV1Api(api).list_namespace)
        assert [n.metadata.name for n in nss.items] == ["ns1"]


# -------------------------------------------------------------------------- kubernetes client
@pytest.fixture
async def kube():
    async with serve_emulator(NS) as env:
        with kubernetes.client.ApiClient(kubernetes.client.Configuration(host=env.url)) as api:
            yield env, kubernetes.client.CoreV1Api(api), kubernetes.client.BatchV1Api(api), \
                kubernetes.client.CustomObjectsApi(api)


def _patch_content_types(k):
    return {r.headers.get("Content-Type") for r in k.history if r.method == "PATCH"}


async def test_kubernetes_client_custom_objects(kube):
    env, _, _, custom = kube
    run = asyncio.to_thread
    args = ("testbed.dev", "v1alpha1", NS, "benchmarks")
    o = await run(custom.create_namespaced_custom_object, *args, _bench("b1"))
    assert o["metadata"]["generation"] == 1 and o["metadata"]["uid"]
    o = await run(custom.get_namespaced_custom_object, *args, "b1")
    assert o["spec"]["workers"] == [1, 2]
    o = await run(custom.patch_namespaced_custom_object, *args, "b1", {"spec": {"workers": [3]}})
    assert o["spec"]["workers"] == [3] and o["metadata"]["generation"] == 2
    o = await run(custom.patch_namespaced_custom_object_status, *args, "b1", {"status": {"phase": "Running"}})
    assert o["status"]["phase"] == "Running" and o["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as e:  # a failing JSON-patch `test` (needs _content_type)
        await run(custom.patch_namespaced_custom_object, *args, "b1",
                  [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
                  _content_type="application/json-patch+json")
    assert e.value.status == 422
    with pytest.raises(ApiException) as e:  # the default content type with a list body
        await run(custom.patch_namespaced_custom_object, *args, "b1", [{"op": "remove", "path": "/spec"}])
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        await run(custom.create_namespaced_custom_object, *args, _bench("bad", spec={"workers": [0]}))
    assert e.value.status == 422 and json.loads(e.value.body)["reason"] == "Invalid"
    o = await run(custom.delete_namespaced_custom_object, *args, "b1")
    assert o["metadata"]["name"] == "b1"
    with pytest.raises(ApiException) as e:
        await run(custom.get_namespaced_custom_object, *args, "b1")
    assert e.value.status == 404
    assert _patch_content_types(env.emulator) == {"application/merge-patch+json", "application/json-patch+json"}
    assert env.emulator.errors == []


async def test_kubernetes_client_configmaps_jobs_and_quotas(kube):
    env, core, batch, _ = kube
    run = asyncio.to_thread
    cm = await run(core.create_namespaced_config_map, NS,
                   {"metadata": {"name": "c", "labels": {"app": "x"}}, "data": {"a": "1"}})
    assert cm.metadata.namespace == NS and cm.metadata.resource_version
    cm = await run(core.patch_namespaced_config_map, "c", NS, {"data": {"b": "2"}})  # strategic merge
    assert cm.data == {"a": "1", "b": "2"}
    cm = await run(core.patch_namespaced_config_map, "c", NS, [{"op": "remove", "path": "/data/a"}])
    assert cm.data == {"b": "2"}
    stale = cm.metadata.resource_version
    cm.data = {"c": "3"}
    cm = await run(core.replace_namespaced_config_map, "c", NS, cm)  # PUT
    assert cm.data == {"c": "3"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as e:
        await run(core.replace_namespaced_config_map, "c", NS, cm)
    assert e.value.status == 409
    await run(core.create_namespaced_config_map, NS, {"metadata": {"name": "other", "labels": {"app": "y"}}})
    lst = await run(core.list_namespaced_config_map, NS, label_selector="app=x")
    assert [i.metadata.name for i in lst.items] == ["c"]
    await run(core.delete_namespaced_config_map, "c", NS)
    with pytest.raises(ApiException) as e:
        await run(core.read_namespaced_config_map, "c", NS)
    assert e.value.status == 404

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": NS},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "runner", "image": "testbed-runner:0.1.0", "command": ["true"]}]}}},
           "status": {"succeeded": 9}}
    j = await run(batch.create_namespaced_job, NS, job)
    assert j.status is None and j.spec.template.spec.containers[0].name == "runner"
    j = await run(batch.patch_namespaced_job_status, "j", NS, {"status": {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]}})
    assert j.status.succeeded == 1 and j.status.conditions[0].type == "Complete"
    j = await run(batch.patch_namespaced_job, "j", NS, {"status": {"failed": 1}, "metadata": {"labels": {"l": "v"}}})
    assert j.status.failed is None and j.metadata.labels == {"l": "v"}  # main endpoint ignores status
    assert (await run(batch.read_namespaced_job, "j", NS)).status.succeeded == 1
    await run(batch.delete_namespaced_job, "j", NS, propagation_policy="Background")
    assert (await run(batch.list_namespaced_job, NS)).items == []

    quota = {"metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi"}}}
    await run(core.create_namespaced_resource_quota, NS, quota)
    quotas = await run(core.list_namespaced_resource_quota, NS)
    assert [q.spec.hard["requests.cpu"] for q in quotas.items] == ["4"]

    assert _patch_content_types(env.emulator) == {"application/strategic-merge-patch+json",
                                                  "application/json-patch+json"}
    assert env.emulator.errors == []


async def test_kubernetes_client_watch_with_a_label_selector(kube):
    env, core, _, _ = kube
    run = asyncio.to_thread

    def watch():
        w = kubernetes.watch.Watch()
        seen = []
        for ev in w.stream(core.list_namespaced_config_map, NS, label_selector="app=x", timeout_seconds=GUARD):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "m2" and ev["type"] == "MODIFIED":
                w.stop()
        return seen

    for name, app in [("n1", "y"), ("m1", "x")]:
        await run(core.create_namespaced_config_map, NS, {"metadata": {"name": name, "labels": {"app": app}}})
    bus = env.emulator._buses[kmock.resource("v1/configmaps")] = ObservedBus()
    watcher = asyncio.create_task(run(watch))
    await asyncio.wait_for(bus.subscribed.wait(), GUARD)  # later changes arrive as events
    for name, app in [("n2", "y"), ("m2", "x")]:
        await run(core.create_namespaced_config_map, NS, {"metadata": {"name": name, "labels": {"app": app}}})
    await run(core.patch_namespaced_config_map, "n2", NS, {"data": {"k": "v"}})
    await run(core.patch_namespaced_config_map, "m2", NS, {"data": {"k": "v"}})
    seen = await asyncio.wait_for(watcher, GUARD + 1)
    assert seen == [("ADDED", "m1"), ("ADDED", "m2"), ("MODIFIED", "m2")]
