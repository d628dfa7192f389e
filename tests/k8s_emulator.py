"""An in-memory Kubernetes API for the operator tests: kmock's emulator with the gaps filled.

``PatchedEmulator`` subclasses ``kmock.KubernetesEmulator`` (kmock 0.8) and fixes what the
operator tests (Kopf, the ``kubernetes`` client, the fake controllers) trip over. Each gap below
has a stock-vs-patched test in ``tests/test_k8s_emulator.py``, which also asserts the *stock*
behaviour, so a kmock release that fixes a gap upstream shows up as a failing stock case.

Gaps fixed (stock kmock 0.8 → this subclass):

* **Stamping.** Stock kmock stores the POSTed body as is: no ``resourceVersion``, ``uid``,
  ``creationTimestamp`` or ``generation``, not even ``metadata.namespace`` for a namespaced URL.
  Here, objects get all of them; ``resourceVersion`` is one global counter bumped by every
  change; ``generation`` is bumped by changes outside ``metadata`` (and outside ``status`` where
  the resource has a status subresource). No-op patches keep the ``resourceVersion``.
  ``generateName`` works. A create answers 201 (stock: 200), like the apiserver, and a create
  of an undeclared resource is 404 (stock kmock declares it on the fly).
* **JSON-patch ``test`` op.** A failing ``test`` gives 500 in stock kmock, so Kopf's finalizer
  patch (``test /metadata/resourceVersion``) fails, Kopf throttles, and handlers never run. Here
  it is 422 ``Invalid``, like the apiserver.
* **Watch race.** Stock ``_serve_watch`` snapshots the objects, streams the snapshot (suspending
  on back-pressure), and only then subscribes to the event bus: events published in between are
  lost. It also ignores ``resourceVersion`` (a LIST → DELETE → WATCH loses the deletion) and
  ``timeoutSeconds``. Here, the snapshot (or the replay of the event log after
  ``?resourceVersion=N``) and the subscription are atomic under the lock that every mutation
  holds while publishing, and ``timeoutSeconds`` ends the stream. There are no BOOKMARK events.
* **Status subresource.** Stock kmock applies any patch anywhere. Here, where the resource
  declares ``status``: the main endpoint ignores ``.status``, ``/status`` changes only
  ``.status``, and a create drops ``.status``. Other subresources (``scale``, ``log``…) are 404.
* **Schema validation.** Stock kmock accepts anything. Here, CRDs registered with
  :meth:`PatchedEmulator.add_crd` (or POSTed as ``CustomResourceDefinition`` objects) prune unknown
  fields like the apiserver (honouring ``x-kubernetes-preserve-unknown-fields``) and validate with
  JSON-Schema **draft 4**, which is what OpenAPI v3.0 means (``exclusiveMinimum: true`` is a
  boolean; newer drafts read it as the number 1). Failures are 422 ``Invalid`` ``Status`` objects
  with ``details.causes``. Built-in kinds are not validated.
* **Selectors.** Stock kmock ignores ``labelSelector``/``fieldSelector``. Here both filter lists
  and watches (equality, ``!=``, ``in``/``notin``, existence; field selectors compare a dotted path).
* **Lists.** Stock lists have ``resourceVersion: "..."`` and no ``kind``; here they have the
  current global ``resourceVersion``, ``apiVersion`` and ``kind: <Kind>List``.
* **Namespaces.** Stock kmock's path parser crashes on ``/api/v1/namespaces`` (500) and reads
  ``/api/v1/namespaces/NAME`` as "namespace NAME, no resource". Here both address the
  cluster-scoped ``v1/namespaces`` resource (and ``…/NAME/status|finalize``).
* **``?watch=True``.** kmock only recognises ``watch=true``; the ``kubernetes`` client sends
  ``watch=True`` (Python's ``str(True)``) and gets a plain list back. Here every spelling Go's
  ``strconv.ParseBool`` accepts starts a watch.
* **PUT.** Stock kmock has no PUT (404). Here a PUT replaces the object, 409 on a stale
  ``metadata.resourceVersion``.
* **PATCH content types.** Stock kmock ignores ``Content-Type`` and picks merge- or JSON-patch by
  the body's shape. Here: ``application/merge-patch+json`` needs an object body and
  ``application/json-patch+json`` a list (else 400); ``application/strategic-merge-patch+json`` is
  **applied as a plain merge patch** (fine for maps; lists are replaced, not merged by key, and
  ``$patch``/``$retainKeys``/``$setElementOrder`` directives are refused with 400) and, like the
  apiserver, refused with 415 for custom resources; anything else (``application/json``,
  server-side apply's ``application/apply-patch+yaml``) is 415. The ``kubernetes`` client sends
  strategic-merge for dict patches of built-in kinds and merge-patch for custom objects.
* **Errors.** Deliberate 4xx answers are not recorded in ``emulator.errors``, so that list holds
  only real server-side failures (500s) worth asserting on.

Not emulated (by design): garbage collection via ``ownerReferences`` (the operator deletes its
children itself; a test must not rely on cascading), admission, defaulting, server-side apply,
``deletecollection``, namespace deletion cascades, BOOKMARK events. The event log used for watch
replays grows without bound, which is fine for tests. DSL reactions (``emulator[...] << 500``)
still apply to reads and creates, but PATCH/PUT/DELETE are answered by the subclass directly.

This module relies on kmock internals (``kmock._internal``, the private ``_objects``, ``_buses``,
``_lock``, ``_requests``, and the shape of ``RawHandler.__call__``), hence the ``kmock==0.8`` pin in
``pyproject.toml``. Helpers: :func:`load_crds`, :func:`serve_emulator`, :func:`write_kubeconfig`.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import functools
import importlib.util
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import kmock
import yaml
from kmock import KubernetesEmulator, ResourceInfo, action, resource
from kmock._internal import apps, dicts, enums, parsing, rendering  # private: kmock==0.8 is pinned
from kmock._internal.k8s import (KubernetesError, KubernetesObjectConflictError,
                                 KubernetesObjectNotFoundError)

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_CRD = ROOT / "operator" / "crds" / "benchmark.yaml"
KUBERAY_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"  # read in place, never copied
CRD_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
CRDS = resource("apiextensions.k8s.io/v1/customresourcedefinitions")
NAMESPACES = resource("v1/namespaces")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


# ------------------------------------------------------------------------------------ helpers
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, **details: Any) -> KubernetesError:
    """A v1 ``Status`` error (rendered by ``KubernetesScaffold._render_error``)."""
    return KubernetesError(status=code, reason=reason, message=message, details=details or {})


def _without(obj: dict, keys: Iterable[str]) -> dict:
    return {k: v for k, v in obj.items() if k not in set(keys)}


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3.0 (a Kubernetes structural schema) → JSON Schema draft 4.

    Drops ``x-kubernetes-*`` and ``format``, maps ``nullable: true`` to a type list and
    ``x-kubernetes-int-or-string`` to integer-or-string. Validate the result with
    ``jsonschema.Draft4Validator`` (see the module docstring for why draft 4)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes") and k not in ("nullable", "format")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _prune(obj: Any, schema: dict) -> Any:
    """Drop the fields a structural schema does not declare, as the apiserver does."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: _prune(v, props[k]) for k, v in obj.items() if k in props}
    if isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: _prune(v, schema["additionalProperties"]) for k, v in obj.items()}
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"]) for v in obj]
    return obj


_SPLIT = re.compile(r",(?![^()]*\))")  # commas outside of "in (a,b)" parentheses
_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_TERM = re.compile(rf"""^\s*(?:
      !\s*(?P<absent>{_KEY})
    | (?P<skey>{_KEY})\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
    | (?P<ekey>{_KEY})\s*(?P<eqop>==|=|!=)\s*(?P<value>[^\s,()!=]*)
    | (?P<present>{_KEY})
)\s*$""", re.X)


def match_labels(labels: dict[str, str] | None, selector: str | None) -> bool:
    """Whether ``labels`` match a Kubernetes label selector string (``ValueError`` if malformed)."""
    labels = labels or {}
    for term in _SPLIT.split(selector or ""):
        if not term.strip():
            continue
        m = _TERM.match(term)
        if m is None:
            raise ValueError(f"unable to parse requirement: {term!r}")
        if m["absent"]:
            ok = m["absent"] not in labels
        elif m["present"]:
            ok = m["present"] in labels
        elif m["skey"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            ok = (labels.get(m["skey"]) in values) == (m["setop"] == "in")
            ok = ok and (m["setop"] == "notin" or m["skey"] in labels)
        else:
            ok = (labels.get(m["ekey"]) == m["value"]) == (m["eqop"] != "!=")
        if not ok:
            return False
    return True


def _match_fields(obj: dict, selector: str | None) -> bool:
    for term in (selector or "").split(","):
        if not term.strip():
            continue
        m = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)\s*(\S*)\s*", term)
        if m is None:
            raise ValueError(f"invalid field selector: {term!r}")
        value: Any = obj
        for part in m[1].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (("" if value is None else str(value)) == m[3]) != (m[2] != "!="):
            return False
    return True


def _has_smp_directives(node: Any) -> bool:
    if isinstance(node, dict):
        return any(str(k).startswith("$") or _has_smp_directives(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_smp_directives(v) for v in node)
    return False


_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # what the apiserver's strconv.ParseBool accepts
_NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?")


async def _parse_request(raw_request: aiohttp.web.BaseRequest, id: int) -> rendering.Request:
    """``rendering.Request._parse``, except that ``/api/v1/namespaces[/NAME]`` is the namespaces
    resource (kmock 0.8 raises on the first and misreads the second)."""
    m = _NAMESPACE_PATH.fullmatch(raw_request.path)
    if m is None:
        request = await rendering.Request._parse(raw_request, id=id)
        if (request.resource is not None and request.method == enums.method.GET
                and request.params.get("watch") in _GO_TRUE and request.action != action.WATCH):
            request = attrs.evolve(request, action=action.WATCH)  # e.g. ?watch=True
        return request
    body = await raw_request.read()
    text = await raw_request.text()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    path = parsing.ParsedPath("", "v1", "namespaces", None, m["name"], m["sub"])
    return rendering.Request(
        id=id, raw_request=raw_request, url=raw_request.url, method=raw_request.method,
        params=dict(raw_request.query), headers=dict(raw_request.headers),
        cookies=dict(raw_request.cookies), data=data, body=body, text=text,
        action=parsing.guess_k8s(path, enums.method(raw_request.method), dict(raw_request.query)),
        resource=NAMESPACES, namespace=None, name=m["name"], subresource=m["sub"])


# ----------------------------------------------------------------------------------- emulator
REQUEST_WINDOW = 32  # kmock scans this list once per DSL reaction for every request


@attrs.define(kw_only=True)
class PatchedEmulator(KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with the gaps listed in the module docstring fixed."""

    _rv: int = attrs.field(default=0, init=False)
    _schemas: dict = attrs.field(factory=dict, init=False)      # resource -> openAPIV3Schema
    _validators: dict = attrs.field(factory=dict, init=False)   # resource -> Draft4Validator (lazy)
    _custom: set = attrs.field(factory=set, init=False)         # resources defined by CRDs
    _log: list = attrs.field(factory=list, init=False)          # [(rv, resource, event)], for replays
    # Every request served, for assertions. kmock's own ``_requests`` is trimmed to a window:
    # its DSL matches each request by scanning all earlier ones (O(n^2) over a long run).
    history: list = attrs.field(factory=list, init=False)
    # Fault injection (resilience tests): each callable sees every request before it is
    # served and may return a KubernetesError to answer with instead (see ``fail_requests``).
    faults: list = attrs.field(factory=list, init=False)
    # Cut every watch stream after this many seconds, mid-stream, as a dropped connection.
    watch_cut_seconds: float | None = attrs.field(default=None, init=False)
    _injected: list = attrs.field(factory=list, init=False)

    # ------------------------------------------------------------------------ registration
    def add_crd(self, crd: dict) -> list[resource]:
        """Serve every version of a ``CustomResourceDefinition`` (with its schema, if any)."""
        spec, names = crd["spec"], crd["spec"]["names"]
        added = []
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            res = resource(spec["group"], version["name"], names["plural"])
            self.resources[res] = ResourceInfo(
                kind=names["kind"], singular=names.get("singular"),
                namespaced=spec.get("scope") == "Namespaced",
                shortnames=names.get("shortNames", []), categories=names.get("categories", []),
                subresources=set(version.get("subresources") or {}), verbs=set(CRD_VERBS))
            self._custom.add(res)
            self._validators.pop(res, None)
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                self._schemas[res] = schema
            else:
                self._schemas.pop(res, None)
            added.append(res)
        return added

    def add_schemaless(self, res: str, kind: str, *, namespaced: bool = True,
                       subresources: Iterable[str] = ("status",)) -> resource:
        """Serve a custom resource without a schema (anything validates, nothing is pruned)."""
        r = resource(res)
        self.resources[r] = ResourceInfo(kind=kind, singular=kind.lower(), namespaced=namespaced,
                                         subresources=set(subresources), verbs=set(CRD_VERBS))
        self._custom.add(r)
        return r

    def _validate(self, res: resource, obj: dict) -> dict:
        schema = self._schemas.get(res)
        if schema is None:
            return obj
        keep = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
        obj = {**_prune(obj, schema), **keep}
        if res not in self._validators:
            self._validators[res] = jsonschema.Draft4Validator(openapi_to_jsonschema(schema))
        errors = sorted(self._validators[res].iter_errors(obj), key=lambda e: list(map(str, e.path)))
        if errors:
            causes = [{"reason": "FieldValueInvalid", "message": e.message,
                       "field": ".".join(str(p) for p in e.path)} for e in errors]
            kind, name = self.resources[res].kind, obj.get("metadata", {}).get("name")
            raise _status(422, "Invalid", f'{kind}.{res.group} "{name}" is invalid: '
                          + "; ".join(f"{c['field']}: {c['message']}" for c in causes),
                          name=name, group=res.group, kind=kind, causes=causes)
        return obj

    # ------------------------------------------------------------------------------ events
    def _bump(self, obj: dict) -> dict:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return obj

    async def _emit(self, res: resource, etype: str, raw: dict) -> None:
        """Log and publish an event. Always called while holding ``self._lock``."""
        event = {"type": etype, "object": raw}
        self._log.append((int(raw["metadata"]["resourceVersion"]), res, event))
        await self._buses[res].put(event)

    # -------------------------------------------------------------------------- transport
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """``RawHandler.__call__`` with the namespaces path fix, and 4xx kept out of ``errors``."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            if self.limit is not None and len(self.history) >= self.limit:
                raise apps.KMockError("Too many requests have been served so far.")
            request = await _parse_request(raw_request, id=len(self.history))
            self.history.append(request)
            self._requests.append(request)
            if len(self._requests) > REQUEST_WINDOW:
                del self._requests[:-REQUEST_WINDOW // 2]
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise e.__cause__ if e.__cause__ is not None else e
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

    # -------------------------------------------------------------------------- mutations
    def _patch_body(self, request: rendering.Request, res: resource) -> Any:
        headers = {k.lower(): v for k, v in request.headers.items()}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        body = request.data
        if ctype == STRATEGIC_MERGE_PATCH:
            if res in self._custom:
                raise _status(415, "UnsupportedMediaType",
                              f"the body of the request was in an unknown format - accepted media "
                              f"types include: {JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml")
            if _has_smp_directives(body):
                raise _status(400, "BadRequest", "the emulator applies strategic-merge patches as "
                              "merge patches and does not support $-directives")
            ctype = MERGE_PATCH
        if ctype == MERGE_PATCH:
            if not isinstance(body, dict):
                raise _status(400, "BadRequest", "a merge patch must be a JSON object")
        elif ctype == JSON_PATCH:
            if not isinstance(body, list):
                raise _status(400, "BadRequest", "a JSON patch must be a JSON array")
        else:
            raise _status(415, "UnsupportedMediaType",
                          f"the body of the request was in an unknown format ({ctype or 'none'}) - "
                          f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                          f"{STRATEGIC_MERGE_PATCH} (server-side apply is not emulated)")
        return body

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Replaces the parent's mutation block entirely; reads go to RawHandler._handle (the DSL
        # reactions, then the _serve_* fallbacks below), skipping KubernetesEmulator._handle.
        for fault in self.faults:
            error = fault(request)
            if error is not None:
                self._injected.append(error)  # answered as such, not recorded as a server bug
                raise error
        res = request.resource
        is_put = request.method == enums.method.PUT and request.name is not None
        if res is None or not (is_put or request.action in (action.CREATE, action.UPDATE, action.DELETE)):
            return await apps.RawHandler._handle(self, request)
        info = self.resources[res] if res in self.resources else ResourceInfo()
        has_status = "status" in info.subresources
        if request.subresource not in (None, "status") or (request.subresource == "status" and not has_status):
            raise _status(404, "NotFound", "the server could not find the requested resource")

        if request.action == action.CREATE:
            if res not in self._get_resources():  # stock kmock creates the unknown resource
                raise _status(404, "NotFound", "the server could not find the requested resource")
            await self._create(request, res, info, has_status)
            # Outside the lock (asyncio.Lock is not re-entrant; _serve_create takes it again).
            response = await apps.RawHandler._handle(self, request)
            if response.status == 200 and not response.prepared:
                response.set_status(201)
            return response

        async with self._lock:
            key = (res, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                raise KubernetesObjectNotFoundError()
            old = copy.deepcopy(self._objects[key].raw)

            if request.action == action.DELETE:
                if old["metadata"].get("finalizers"):
                    if not old["metadata"].get("deletionTimestamp"):
                        old["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
                        self._objects[key].patch(self._bump(old))
                        await self._emit(res, "MODIFIED", self._objects[key].raw)
                    return aiohttp.web.json_response(self._objects[key].raw)
                self._objects[key].delete()
                await self._emit(res, "DELETED", self._bump(old))
                return aiohttp.web.json_response(old)

            # PATCH or PUT, to the main endpoint or to /status.
            try:
                if is_put:
                    new = copy.deepcopy(request.data)
                    if not isinstance(new, dict):
                        raise _status(400, "BadRequest", "a PUT body must be a JSON object")
                    sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                    if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                        raise _status(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} '
                                      f'"{request.name}": the object has been modified; please apply '
                                      f'your changes to the latest version and try again')
                else:
                    new = dict(dicts.patch_dict(copy.deepcopy(old), self._patch_body(request, res)))
            except jsonpatch.JsonPatchTestFailed as e:
                raise _status(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
            except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, ValueError, TypeError) as e:
                raise _status(422, "Invalid", f"the server rejected our request: {e}")  # the code is a guess
            if request.subresource == "status":
                final = {**old, "status": new.get("status")}
                if final["status"] is None:
                    final.pop("status")
            else:
                final = dict(new)
                if has_status:                               # the main endpoint ignores .status
                    final.pop("status", None)
                    if "status" in old:
                        final["status"] = old["status"]
            meta = final["metadata"] = dict(final.get("metadata") or {})
            for k in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "generation"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            meta["resourceVersion"] = old["metadata"].get("resourceVersion")
            ignored = {"metadata", "status"} if has_status else {"metadata"}
            if _without(final, ignored) != _without(old, ignored):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            final = self._validate(res, final)
            if final == old:                                 # a no-op keeps the resourceVersion
                return aiohttp.web.json_response(old)
            final = self._bump(final)
            self._objects[key].history.append(final)
            if final["metadata"].get("deletionTimestamp") and not final["metadata"].get("finalizers"):
                self._objects[key].delete()
                await self._emit(res, "DELETED", final)
            else:
                await self._emit(res, "MODIFIED", final)
            return aiohttp.web.json_response(final)

    async def _create(self, request: rendering.Request, res: resource, info: ResourceInfo,
                      has_status: bool) -> None:
        body = copy.deepcopy(request.data)
        if not isinstance(body, dict):
            raise _status(400, "BadRequest", "the body of a create must be a JSON object")
        meta = body["metadata"] = dict(body.get("metadata") or {})
        async with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            if not meta.get("name"):
                raise _status(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            if info.namespaced is False:
                meta.pop("namespace", None)
            elif request.namespace:
                if meta.get("namespace", request.namespace) != request.namespace:
                    raise _status(400, "BadRequest", "the namespace of the provided object does "
                                  "not match the namespace sent on the request")
                meta["namespace"] = request.namespace
            key = (res, meta.get("namespace"), meta["name"])
            if key in self._objects and not self._objects[key].deleted:
                raise KubernetesObjectConflictError(
                    reason="AlreadyExists", message=f'{res.plural} "{meta["name"]}" already exists')
            if has_status:
                body.pop("status", None)
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            body = self._bump(self._validate(res, body))
            if key in self._objects:
                self._objects[key].create(body)
            else:
                self._objects[key] = body
            if res == CRDS:
                self.add_crd(body)
            await self._emit(res, "ADDED", self._objects[key].raw)
            # So that _serve_create finds the object (generateName, the URL's namespace) to return it.
            request.data.setdefault("metadata", {}).update(
                {k: meta[k] for k in ("name", "namespace") if k in meta})

    # ------------------------------------------------------------------------------ reads
    @staticmethod
    def _check_selectors(request: rendering.Request) -> None:
        try:
            match_labels({}, request.params.get("labelSelector"))
            _match_fields({}, request.params.get("fieldSelector"))
        except ValueError as e:
            raise _status(400, "BadRequest", str(e))

    def _select(self, request: rendering.Request) -> list[dict]:
        return [obj.raw for (res, ns, name), obj in self._objects.items()
                if res == request.resource and not obj.deleted
                and (request.namespace is None or ns == request.namespace)
                and (request.name is None or name == request.name)
                and self._wanted(request, obj.raw)]

    @staticmethod
    def _wanted(request: rendering.Request, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        return ((request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and match_labels(meta.get("labels"), request.params.get("labelSelector"))
                and _match_fields(obj, request.params.get("fieldSelector")))

    async def _serve_list(self, request: rendering.Request) -> Any:
        if request.resource not in self._get_resources():
            return await super()._serve_list(request)      # raises the 404
        self._check_selectors(request)
        async with self._lock:
            res = request.resource
            kind = self.resources[res].kind if res in self.resources else None
            return {"apiVersion": f"{res.group}/{res.version}".lstrip("/"),
                    "kind": f"{kind}List" if kind else "List",
                    "metadata": {"resourceVersion": str(self._rv)}, "items": self._select(request)}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        self._check_selectors(request)  # a malformed selector is a 400, before the stream starts
        yield b""  # send the headers now, even if nothing happens
        res, since = request.resource, request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        bus = self._buses[res]
        # THE RACE FIX: the snapshot (or the replay) and the subscription happen atomically, under
        # the lock that every mutation holds while publishing its event.
        async with self._lock:
            mark = await bus.mark()
            if since and since.isdigit() and since != "0":
                events = [ev for rv, r, ev in self._log if r == res and rv > int(since)]
            else:
                events = [{"type": "ADDED", "object": o} for o in self._select(request)]
        try:
            for ev in events:
                if self._wanted(request, ev["object"]):
                    yield ev
            cut = self.watch_cut_seconds
            try:
                async with asyncio.timeout(timeout if cut is None else min(timeout or cut, cut)):
                    async for ev in bus.stream(since=mark):
                        if self._wanted(request, ev["object"]):
                            yield ev
            except TimeoutError:
                if cut is not None and request._raw_request is not None:
                    transport = request._raw_request.transport
                    if transport is not None:
                        transport.abort()  # a dropped connection, not a clean end of stream
                return                                     # like ?timeoutSeconds= on the apiserver
        finally:
            await bus.unmark(mark)


def fail_requests(status: int, times: int, *, method: str | None = None, plural: str | None = None,
                  subresource: str | None = None, name: str | None = None):
    """A fault for ``PatchedEmulator.faults``: answer the first ``times`` matching requests with
    ``status`` (409 Conflict, 500 InternalError, 503 ServiceUnavailable, ...). ``.hits`` counts
    the requests it failed."""
    reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}

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
        return _status(status, reasons.get(status, "InternalError"), f"injected fault ({status})")
    fault.hits = 0
    return fault


# ------------------------------------------------------------------------------------- CRDs
def _load_yaml(path: Path) -> list[dict]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KubeRay CRDs are 1-1.4 MB
    return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]


@functools.cache
def _crd_documents() -> tuple[tuple[dict, ...], bool]:
    """The CRDs to serve (parsed once per process), and whether the KubeRay ones were found."""
    crds = _load_yaml(BENCHMARK_CRD)
    kuberay = KUBERAY_DIR.is_dir() and any(KUBERAY_DIR.glob("*.yaml"))
    if kuberay:
        for path in sorted(KUBERAY_DIR.glob("*.yaml")):
            crds += _load_yaml(path)
    dask = dask_crd_dir()
    if dask is not None:
        for path in sorted(dask.glob("*.yaml")):
            crds += _load_yaml(path)
    return tuple(d for d in crds if d.get("kind") == "CustomResourceDefinition"), bool(kuberay)


def dask_crd_dir() -> Path | None:
    """The CRDs the installed ``dask-kubernetes`` wheel ships (found without importing it)."""
    spec = importlib.util.find_spec("dask_kubernetes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(list(spec.submodule_search_locations)[0]) / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds")
    return path if path.is_dir() else None


def load_crds(emulator: PatchedEmulator) -> list[str]:
    """Register the Benchmark CRD, the KubeRay v1.7.0 CRDs from ``../shared/schemas/kuberay``
    (or, if that folder is absent, schemaless ``ray.io/v1`` RayCluster/RayJob/RayService), and the
    dask-kubernetes CRDs. Returns the ``group/version/plural`` names registered."""
    crds, kuberay = _crd_documents()
    added = [r for crd in crds for r in emulator.add_crd(crd)]
    if not kuberay:
        added += [emulator.add_schemaless(f"ray.io/v1/{plural}", kind)
                  for plural, kind in (("rayclusters", "RayCluster"), ("rayjobs", "RayJob"),
                                       ("rayservices", "RayService"))]
    return [f"{r.group}/{r.version}/{r.plural}" for r in added]


# ------------------------------------------------------------------------------------ serving
@dataclass(frozen=True)
class EmulatorHandle:
    """What :func:`serve_emulator` yields."""
    emulator: PatchedEmulator
    server: kmock.Server
    url: str            # e.g. "http://127.0.0.1:40123" (no trailing slash)
    namespace: str


@contextlib.asynccontextmanager
async def serve_emulator(namespace: str = "ns1") -> AsyncIterator[EmulatorHandle]:
    """Serve a :class:`PatchedEmulator` on a random local port, on the running event loop, with
    the built-in kinds, the CRDs of :func:`load_crds` and the namespace ``namespace``."""
    async with PatchedEmulator() as k, kmock.Server(k) as srv:
        k.resources.load_bundled()   # v1 namespaces/configmaps/..., batch/v1 jobs, networking.k8s.io/v1 networkpolicies...
        load_crds(k)
        async with srv.client.post("/api/v1/namespaces", json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}) as resp:
            resp.raise_for_status()
        yield EmulatorHandle(emulator=k, server=srv, url=str(srv.url).rstrip("/"), namespace=namespace)


def write_kubeconfig(path: str | Path, url: str, namespace: str = "ns1") -> Path:
    """Write a kubeconfig (context ``kmock``, no credentials) pointing at the emulator."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock", "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock",
                                                   "namespace": namespace}}],
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
