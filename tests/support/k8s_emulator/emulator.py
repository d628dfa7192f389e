""":class:`PatchedEmulator`: the state, registration, transport and routing, reads and
discovery; the other concerns are mixins from the sibling modules."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp.web
import attrs
import yaml
from kmock import KubernetesEmulator, ResourceInfo, resource
from kmock._internal import apps, rendering  # private: kmock==0.8 is pinned
from kmock._internal.k8s import KubernetesError

from .apimachinery import (
    CRD_VERBS,
    GO_TRUE,
    WATCH_CACHE_SIZE,
    group_version,
    header,
    match_fields,
    match_labels,
    not_found,
    parse_request,
    status_error,
    version_priority,
)
from .gc import GarbageCollectorMixin
from .openapi import openapi_document, openapi_index
from .rbac import Attributes, AuthorizationMixin
from .tables import DEFAULT_CRD_COLUMNS, table, table_version
from .watch import WatchMixin
from .writes import WritesMixin

Handler = Callable[[rendering.Request], Awaitable[aiohttp.web.StreamResponse]]
REQUEST_WINDOW = 32  # kmock scans this list once per DSL reaction for every request


@attrs.define(kw_only=True)
class PatchedEmulator(WritesMixin, WatchMixin, GarbageCollectorMixin, AuthorizationMixin,
                      KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with the gaps listed in the package docstring fixed."""

    _rv: int = attrs.field(default=0, init=False)
    _schemas: dict = attrs.field(factory=dict, init=False)      # resource -> openAPIV3Schema
    _validators: dict = attrs.field(factory=dict, init=False)   # resource -> Draft4Validator (lazy)
    _custom: set = attrs.field(factory=set, init=False)         # resources defined by CRDs
    _storage: dict = attrs.field(factory=dict,
                                 init=False)      # served CRD version -> storage version
    _columns: dict = attrs.field(factory=dict, init=False)      # CRD version -> printer columns
    _openapi: dict | None = attrs.field(default=None,
                                        init=False)   # "apis/g/v" -> document (cached)
    # Per storage resource: the last ``watch_cache_size`` events [(rv, event)], for replays.
    _log: dict = attrs.field(factory=lambda: collections.defaultdict(collections.deque), init=False)
    _log_trimmed: set = attrs.field(factory=set, init=False)    # resources whose log lost events
    watch_cache_size: int = attrs.field(default=WATCH_CACHE_SIZE, init=False)
    _watches: dict = attrs.field(factory=dict,
                                 init=False)      # id(response) -> raw request, open watches
    _gc_task: asyncio.Task | None = attrs.field(default=None, init=False)
    _gc_pending: bool = attrs.field(default=False, init=False)
    # Every request served, for assertions. kmock's own ``_requests`` is trimmed to a window:
    # its DSL matches each request by scanning all earlier ones (O(n^2) over a long run).
    history: list = attrs.field(factory=list, init=False)
    # Fault injection (resilience tests): each callable sees every request before it is
    # served and may return a KubernetesError to answer with instead (see ``fail_requests``).
    faults: list = attrs.field(factory=list, init=False)
    # Cut every watch stream after this many seconds, mid-stream, as a dropped connection.
    watch_cut_seconds: float | None = attrs.field(default=None, init=False)
    # Opt-in authorization: None allows everything (no authorizer, no owner-reference admission).
    authorizer: Callable[[Attributes], bool] | None = attrs.field(default=None, init=False)
    _injected: list = attrs.field(factory=list, init=False)

    async def __aexit__(self, *exc: Any) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            await asyncio.gather(self._gc_task, return_exceptions=True)
        await super().__aexit__(*exc)

    # ------------------------------------------------------------------------ registration
    def add_crd(self, crd: dict) -> list[resource]:
        """Serve every version of a ``CustomResourceDefinition`` (with its schema, if any)."""
        spec, names = crd["spec"], crd["spec"]["names"]
        added = []
        versions = [v for v in spec["versions"] if v.get("served", True)]
        storage = next((v["name"] for v in spec["versions"] if v.get("storage")),
                       versions[0]["name"])
        for version in versions:
            res = resource(spec["group"], version["name"], names["plural"])
            self.resources[res] = ResourceInfo(
                kind=names["kind"], singular=names.get("singular"),
                namespaced=spec.get("scope") == "Namespaced",
                shortnames=names.get("shortNames", []), categories=names.get("categories", []),
                subresources=set(version.get("subresources") or {}), verbs=set(CRD_VERBS))
            self._custom.add(res)
            self._storage[res] = resource(spec["group"], storage, names["plural"])
            self._columns[res] = version.get("additionalPrinterColumns") or DEFAULT_CRD_COLUMNS
            self._validators.pop(res, None)
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                self._schemas[res] = schema
            else:
                self._schemas.pop(res, None)
            added.append(res)
        self._openapi = None
        return added

    def add_schemaless(self, res: str, kind: str, *, namespaced: bool = True,
                       subresources: Iterable[str] = ("status",)) -> resource:
        """Serve a custom resource without a schema (anything validates, nothing is pruned)."""
        r = resource(res)
        self.resources[r] = ResourceInfo(kind=kind, singular=kind.lower(), namespaced=namespaced,
                                         subresources=set(subresources), verbs=set(CRD_VERBS))
        self._custom.add(r)
        return r

    def _store_of(self, res: resource) -> resource:
        """Where objects of a served resource live: the CRD's storage version, or itself."""
        return self._storage.get(res, res)

    def _key(self, res: resource, namespace: str | None, name: str | None) -> tuple:
        return (self._store_of(res), namespace, name)

    def _present(self, obj: dict, res: resource) -> dict:
        """An object as the requested version shows it (conversion ``None`` rewrites apiVersion:
        staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/conversion/nop_converter.go)."""
        gv = group_version(res)
        return obj if obj.get("apiVersion") == gv else {**obj, "apiVersion": gv}


    # -------------------------------------------------------------------------- transport
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """``RawHandler.__call__`` with the namespaces path fix, and 4xx kept out of ``errors``."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            if self.limit is not None and len(self.history) >= self.limit:
                raise apps.KMockError("Too many requests have been served so far.")
            request = await parse_request(raw_request, id=len(self.history))
            self.history.append(request)
            self._requests.append(request)
            if len(self._requests) > REQUEST_WINDOW:
                del self._requests[:-REQUEST_WINDOW // 2]
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                # the failure inside the stream, as it was raised: no new chaining
                raise e.__cause__ if e.__cause__ is not None else e  # noqa: B904
        except Exception as e:
            prepared = raw_response is not None and raw_response.prepared
            deliberate = isinstance(e, KubernetesError) and (
                e.status < 500 or any(e is x for x in self._injected))
            if deliberate and not prepared:
                return await self._render_error(e)  # a deliberate answer, not a server failure
            if not self._errors:
                raise
            self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response


    # ---------------------------------------------------------------------------- routing
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """Resource requests are answered here, each by the handler of its verb; other paths
        (discovery, /version, /openapi, 404s) go to kmock's RawHandler (DSL reactions, then the
        fallbacks of KubernetesScaffold)."""
        self._inject_faults(request)
        res = request.resource
        if res is None or res.plural is None or res.version is None:
            return await self._serve_other(request)
        self._check_served(request)
        if request.method.value in ("POST", "PUT"):
            request = self._decode_body(request)
        return await self._handler(request)(request)

    def _inject_faults(self, request: rendering.Request) -> None:
        for fault in self.faults:
            error = fault(request)
            if error is not None:
                self._injected.append(error)  # answered as such, not recorded as a server bug
                raise error

    def _check_served(self, request: rendering.Request) -> None:
        """404 for a resource or subresource not served, 403 for a request not authorized."""
        res = request.resource
        if res not in self.resources:  # stock kmock creates an unknown resource on a POST
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        self._authorize(request)
        info = self.resources[res]
        if request.subresource not in (None, "status") or (
                request.subresource == "status" and "status" not in info.subresources):
            raise status_error(404, "NotFound", "the server could not find the requested resource")

    def _handler(self, request: rendering.Request) -> Handler:
        """The handler of a resource request's verb: get, list, watch, create, update or patch,
        delete; 405 for the others (deletecollection, POST to an object...)."""
        method = request.method.value
        if method == "GET":
            if request.params.get("watch") in GO_TRUE:
                return self._serve_watch_stream
            return self._serve_get if request.name else self._serve_collection
        handlers: dict[tuple[str, bool], Handler] = {
            ("POST", False): self._serve_create, ("PUT", True): self._serve_update,
            ("PATCH", True): self._serve_update, ("DELETE", True): self._serve_delete}
        handler = handlers.get((method, request.name is not None))
        if handler is None:
            raise status_error(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource (not emulated)")
        return handler

    @staticmethod
    def _decode_body(request: rendering.Request) -> rendering.Request:
        """The body of a create or update: JSON, or YAML; anything else (kubectl sends protobuf
        for built-in kinds) is 415, as the apiserver answers a type it has no serializer for
        (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/negotiation/errors.go)."""
        ctype = header(request, "Content-Type").split(";")[0].strip().lower()
        if ctype == "application/json":
            return request
        if ctype == "application/yaml":
            try:
                return attrs.evolve(request, data=yaml.safe_load(request.text or ""))
            except yaml.YAMLError as e:
                raise status_error(400, "BadRequest", f"error decoding YAML: {e}") from e
        raise status_error(415, "UnsupportedMediaType",
                           f'the body of the request was in an unknown format - '
                           'accepted media types include: application/json, application/yaml '
                           f'("{ctype}" is not emulated)')

    async def _serve_other(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path == "/version/":  # the version WebService serves its root with and without the slash
            # (staging/src/k8s.io/apiserver/pkg/endpoints/discovery/version.go)
            return aiohttp.web.json_response(await self._serve_server_version(request))
        if path.rstrip("/") == "/openapi/v3":
            return aiohttp.web.json_response(self._openapi_index())
        if path.startswith("/openapi/v3/"):
            doc = self._openapi_documents().get(path.removeprefix("/openapi/v3/"))
            if doc is None or not path.removeprefix("/openapi/v3/"):
                raise status_error(404, "NotFound",
                                   "the server could not find the requested resource")
            return aiohttp.web.json_response(doc)
        return await apps.RawHandler._handle(self, request)

    # ------------------------------------------------------------------------------ reads
    @staticmethod
    def _check_selectors(request: rendering.Request) -> None:
        try:
            match_labels({}, request.params.get("labelSelector"))
            match_fields({}, request.params.get("fieldSelector"))
        except ValueError as e:
            raise status_error(400, "BadRequest", str(e)) from e

    def _select(self, request: rendering.Request) -> list[dict]:
        store = self._store_of(request.resource)
        return [obj.raw for (res, ns, name), obj in self._objects.items()
                if res == store and not obj.deleted
                and (request.namespace is None or ns == request.namespace)
                and (request.name is None or name == request.name)
                and self._wanted(request, obj.raw)]

    @staticmethod
    def _wanted(request: rendering.Request, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        return ((request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and match_labels(meta.get("labels"), request.params.get("labelSelector"))
                and match_fields(obj, request.params.get("fieldSelector")))

    def _stored(self, res: resource, namespace: str | None, name: str | None) -> dict:
        key = self._key(res, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            raise not_found(res, name)
        return self._objects[key].raw

    def _table(self, request: rendering.Request, objs: list[dict], rv: str, version: str,
               headers: bool = True) -> dict:
        """A Table of ``objs`` with the printer columns of the requested resource."""
        return table(request, objs, rv, version, self._columns.get(request.resource), headers)

    async def _serve_get(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        as_table = table_version(request)
        async with self._lock:
            obj = self._present(self._stored(request.resource, request.namespace, request.name),
                                request.resource)
        if as_table:
            obj = self._table(request, [obj], obj["metadata"].get("resourceVersion", ""), as_table)
        return aiohttp.web.json_response(obj)

    async def _serve_collection(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        as_table = table_version(request)
        self._check_selectors(request)
        res = request.resource
        async with self._lock:
            items = [self._present(o, res) for o in self._select(request)]
            rv = str(self._rv)
        if as_table:
            return aiohttp.web.json_response(self._table(request, items, rv, as_table))
        return aiohttp.web.json_response({"apiVersion": group_version(res),
                                          "kind": f"{self.resources[res].kind}List",
                                          "metadata": {"resourceVersion": rv}, "items": items})

    # -------------------------------------------------------------------------- discovery
    async def _serve_apis(self, request: rendering.Request) -> rendering.Payload:
        body = await super()._serve_apis(request)
        for group in body["groups"]:
            self._order_versions(group)
        return body

    async def _serve_group(self, request: rendering.Request) -> rendering.Payload:
        return self._order_versions(await super()._serve_group(request))

    @staticmethod
    def _order_versions(group: dict) -> dict:
        """Versions in priority order, the first preferred (sortGroupDiscoveryByKubeAwareVersion
        in staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/
        customresource_discovery_controller.go)."""
        group["versions"] = sorted(group["versions"], key=lambda v: version_priority(v["version"]))
        group["preferredVersion"] = dict(group["versions"][0])
        return group

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        body = await super()._serve_version(request)
        body["groupVersion"] = group_version(request.resource)  # stock: "/v1" for the core group
        for entry in body["resources"]:
            if entry["name"].endswith(("/status", "/scale")):
                # the CRD discovery controller lists subresources with these verbs only
                entry.update(verbs=["get", "patch", "update"], shortNames=[], categories=[],
                             singularName="")
        return body

    def _openapi_documents(self) -> dict[str, dict]:
        """One OpenAPI v3 document per CRD group-version, keyed ``apis/<group>/<version>``."""
        if self._openapi is None:
            by_gv: dict[str, list[resource]] = collections.defaultdict(list)
            for res in self._schemas:
                by_gv[f"apis/{res.group}/{res.version}"].append(res)
            self._openapi = {
                gv: openapi_document(sorted(rs, key=lambda r: r.plural), self.resources,
                                     self._schemas)
                for gv, rs in by_gv.items()}
        return self._openapi

    def _openapi_index(self) -> dict:
        """``/openapi/v3`` (cached with the documents, under ``""``)."""
        docs = self._openapi_documents()
        if "" not in docs:
            docs[""] = openapi_index(docs)
        return docs[""]



def fail_requests(status: int, times: int, *, method: str | None = None, plural: str | None = None,
                  subresource: str | None = None, name: str | None = None):
    """A fault for ``PatchedEmulator.faults``: answer the first ``times`` matching requests with
    ``status`` (409 Conflict, 500 InternalError, 503 ServiceUnavailable, ...). ``.hits`` counts
    the requests it failed."""
    reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError",
               503: "ServiceUnavailable"}

    def fault(request):
        if fault.hits >= times:
            return None
        if method is not None and request.method.value != method:
            return None
        if plural is not None and (request.resource is None or request.resource.plural != plural):
            return None
        if subresource is not None and request.subresource != subresource:
            return None
        if name is not None and request.name != name:
            return None
        fault.hits += 1
        return status_error(status, reasons.get(status, "InternalError"),
                            f"injected fault ({status})")
    fault.hits = 0
    return fault
