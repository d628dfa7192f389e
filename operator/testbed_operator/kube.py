"""The few Kubernetes API calls the operator makes, on the official ``kubernetes`` client.

The client is synchronous; :class:`Kube` runs each call in a small dedicated thread pool so the
Kopf event loop never blocks.  Every write is idempotent the way the handlers need it:

* :meth:`Kube.create` treats *409 AlreadyExists* as success and returns the existing object
  (a handler retried, or an operator restarted after creating it);
* :meth:`Kube.delete` treats *404 NotFound* as success;
* :meth:`Kube.get` returns ``None`` for a missing object.

Objects are plain dicts (``ApiClient.sanitize_for_serialization``), so the pure manifest
builders and the status code never see client model classes.

Every request carries the operator's own ``User-Agent`` (:data:`USER_AGENT`), and every write
its own field manager (:data:`FIELD_MANAGER`), so that ``managedFields`` and the API server's
audit log name ``testbed-operator`` instead of the client library's ``OpenAPI-Generator``.
(Kopf's own requests, for its finalizer and annotations, say ``kopf/<version>``.)
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from kubernetes import client
from kubernetes.client.rest import ApiException

from bench.kube.client import version

# apiVersion/kind -> (group, version, plural) for the custom resources the operator manages.
CUSTOM = {
    ("ray.io/v1", "RayJob"): ("ray.io", "v1", "rayjobs"),
    ("ray.io/v1", "RayCluster"): ("ray.io", "v1", "rayclusters"),
    ("kubernetes.dask.org/v1", "DaskCluster"): ("kubernetes.dask.org", "v1", "daskclusters"),
    ("kubernetes.dask.org/v1", "DaskJob"): ("kubernetes.dask.org", "v1", "daskjobs"),
    ("testbed.dev/v1alpha1", "Benchmark"): ("testbed.dev", "v1alpha1", "benchmarks"),
}
NETWORKPOLICY = ("networking.k8s.io/v1", "NetworkPolicy")
FIELD_MANAGER = "testbed-operator"
USER_AGENT = f"testbed-operator/{version()}"
_Objects = list[dict[str, Any]]  # (the class below has a method named list)


def _missing(e: ApiException) -> bool:
    return bool(e.status == 404)


class Kube:
    def __init__(self, api: client.ApiClient, threads: int = 16):
        self.api = api
        api.user_agent = USER_AGENT  # the operator's client, whoever built the ApiClient
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    def _plain(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)

    # -- generic by apiVersion/kind --------------------------------------------------------
    def _sync_create(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        key = (body["apiVersion"], body["kind"])
        fm = {"field_manager": FIELD_MANAGER}
        if key in CUSTOM:
            g, v, p = CUSTOM[key]
            return self._plain(self.custom.create_namespaced_custom_object(g, v, ns, p, body, **fm))
        if key == ("batch/v1", "Job"):
            return self._plain(self.batch.create_namespaced_job(ns, body, **fm))
        if key == ("v1", "ConfigMap"):
            return self._plain(self.core.create_namespaced_config_map(ns, body, **fm))
        if key == NETWORKPOLICY:
            return self._plain(self.networking.create_namespaced_network_policy(ns, body, **fm))
        raise ValueError(f"unsupported kind {key}")

    async def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created): an existing object of that name is returned as is."""
        try:
            return await self._call(self._sync_create, body), True
        except ApiException as e:
            if e.status != 409:
                raise
        existing = await self.get(body["apiVersion"], body["kind"], body["metadata"]["namespace"],
                                  body["metadata"]["name"])
        if existing is None:  # deleted in between: try once more
            return await self._call(self._sync_create, body), True
        return existing, False

    def _sync_get(self, api_version: str, kind: str, ns: str, name: str) -> dict[str, Any]:
        if (api_version, kind) in CUSTOM:
            g, v, p = CUSTOM[(api_version, kind)]
            return self._plain(self.custom.get_namespaced_custom_object(g, v, ns, p, name))
        if kind == "Job":
            return self._plain(self.batch.read_namespaced_job(name, ns))
        if kind == "ConfigMap":
            return self._plain(self.core.read_namespaced_config_map(name, ns))
        if (api_version, kind) == NETWORKPOLICY:
            return self._plain(self.networking.read_namespaced_network_policy(name, ns))
        if (api_version, kind) == ("v1", "ServiceAccount"):
            return self._plain(self.core.read_namespaced_service_account(name, ns))
        raise ValueError(f"unsupported kind {kind}")

    async def get(self, api_version: str, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._call(self._sync_get, api_version, kind, ns, name)
            return obj
        except ApiException as e:
            if _missing(e):
                return None
            raise

    def _sync_delete(self, api_version: str, kind: str, ns: str, name: str) -> None:
        body = client.V1DeleteOptions(propagation_policy="Background")
        if (api_version, kind) in CUSTOM:
            g, v, p = CUSTOM[(api_version, kind)]
            self.custom.delete_namespaced_custom_object(g, v, ns, p, name, body=body)
        elif kind == "Job":
            self.batch.delete_namespaced_job(name, ns, body=body)
        elif kind == "ConfigMap":
            self.core.delete_namespaced_config_map(name, ns)
        elif (api_version, kind) == NETWORKPOLICY:
            self.networking.delete_namespaced_network_policy(name, ns)
        else:
            raise ValueError(f"unsupported kind {kind}")

    async def delete(self, api_version: str, kind: str, ns: str, name: str) -> bool:
        """True when something was deleted; a missing object is fine."""
        try:
            await self._call(self._sync_delete, api_version, kind, ns, name)
            return True
        except ApiException as e:
            if _missing(e):
                return False
            raise

    def _sync_list(self, api_version: str, kind: str, ns: str, selector: str,
                   fields: str = "") -> list[dict[str, Any]]:
        if (api_version, kind) in CUSTOM:
            g, v, p = CUSTOM[(api_version, kind)]
            items = self.custom.list_namespaced_custom_object(g, v, ns, p, label_selector=selector)
            return cast(_Objects, items.get("items", []))
        if kind == "Event":
            items = self.core.list_namespaced_event(ns, label_selector=selector,
                                                    field_selector=fields).items
        elif kind == "Pod":
            items = self.core.list_namespaced_pod(ns, label_selector=selector).items
        elif kind == "Job":
            items = self.batch.list_namespaced_job(ns, label_selector=selector).items
        elif kind == "ConfigMap":
            items = self.core.list_namespaced_config_map(ns, label_selector=selector).items
        elif kind == "ResourceQuota":
            items = self.core.list_namespaced_resource_quota(ns).items
        elif (api_version, kind) == NETWORKPOLICY:
            items = self.networking.list_namespaced_network_policy(
                ns, label_selector=selector).items
        else:
            raise ValueError(f"unsupported kind {kind}")
        return [self._plain(i) for i in items]

    async def list(self, api_version: str, kind: str, ns: str, selector: str = "",
                   fields: str = "") -> list[dict[str, Any]]:
        """``selector``: a label selector; ``fields``: a field selector (Events only)."""
        try:
            objs: _Objects = await self._call(self._sync_list, api_version, kind, ns, selector,
                                              fields)
            return objs
        except ApiException as e:
            if _missing(e):  # the CRD is not installed: nothing of that kind exists
                return []
            raise

    # -- Benchmark status ------------------------------------------------------------------
    async def get_benchmark(self, ns: str, name: str) -> dict[str, Any] | None:
        return await self.get("testbed.dev/v1alpha1", "Benchmark", ns, name)

    async def list_benchmarks(self, ns: str | None) -> _Objects:
        if ns:
            return await self.list("testbed.dev/v1alpha1", "Benchmark", ns)
        items = await self._call(self.custom.list_cluster_custom_object, "testbed.dev", "v1alpha1",
                                 "benchmarks")
        return cast(_Objects, items.get("items", []))

    async def patch_benchmark_status(self, ns: str, name: str,
                                     status: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(
            self.custom.patch_namespaced_custom_object_status, "testbed.dev", "v1alpha1", ns,
            "benchmarks", name, {"status": status}, field_manager=FIELD_MANAGER)
        return obj
