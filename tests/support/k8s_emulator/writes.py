"""Creates, updates, patches and deletes: stamping, status subresource rules, schema
validation and ``fieldValidation``, deletion with the garbage-collection finalizers."""
from __future__ import annotations

import copy
import json
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

import aiohttp.web
import jsonpatch
import jsonpointer
import jsonschema
from kmock import resource
from kmock._internal import dicts, rendering  # private: kmock==0.8 is pinned
from kmock._internal.k8s import KubernetesError

from .apimachinery import (
    CRDS,
    FOREGROUND,
    GO_TRUE,
    JSON_PATCH,
    MERGE_PATCH,
    OBJECT_META_FIELDS,
    ORPHAN,
    ORPHAN_BY_DEFAULT,
    SERVICES,
    STRATEGIC_MERGE_PATCH,
    group_version,
    has_smp_directives,
    header,
    now,
    openapi_to_jsonschema,
    prune,
    qualified,
    status_error,
    without,
)


class WritesMixin:
    """The mutations of :class:`PatchedEmulator`."""

    __slots__ = ()

    def _validate(self, res: resource, obj: dict) -> tuple[dict, list[str], list]:
        """Prune and validate against the schema of ``res``: the object, the paths of the
        unknown fields that pruning dropped, and the schema errors (see :meth:`_raise_invalid`)."""
        schema = self._schemas.get(res)
        if schema is None:
            return obj, [], []
        unknown: list[str] = []
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            unknown += [f"metadata.{k}" for k in meta if k not in OBJECT_META_FIELDS]
            meta = {k: v for k, v in meta.items() if k in OBJECT_META_FIELDS}
        keep = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
        obj = {**prune(obj, schema, "", unknown), **keep,
               **({"metadata": meta} if meta is not None else {})}
        if res not in self._validators:
            self._validators[res] = jsonschema.Draft4Validator(openapi_to_jsonschema(schema))
        errors = sorted(self._validators[res].iter_errors(obj),
                        key=lambda e: list(map(str, e.path)))
        return obj, unknown, errors

    def _raise_invalid(self, res: resource, obj: dict, errors: list) -> None:
        """422 ``Invalid`` with one cause per schema error."""
        if errors:
            causes = [{"reason": "FieldValueInvalid",
                       "message": e.message,  # field.Path: spec.a[0].b
                       "field": "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                        for p in e.path).lstrip(".")}
                      for e in errors]
            kind, name = self.resources[res].kind, obj.get("metadata", {}).get("name")
            raise status_error(422, "Invalid", f'{kind}.{res.group} "{name}" is invalid: '
                               + "; ".join(f"{c['field']}: {c['message']}" for c in causes),
                               name=name, group=res.group, kind=kind, causes=causes)


    def _patch_body(self, request: rendering.Request, res: resource) -> Any:
        ctype = header(request, "Content-Type").split(";")[0].strip().lower()
        body = request.data
        if ctype == STRATEGIC_MERGE_PATCH:
            if res in self._custom:
                raise status_error(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - accepted "
                                   f"media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                                   "application/apply-patch+yaml")
            if has_smp_directives(body):
                raise status_error(400, "BadRequest",
                                   "the emulator applies strategic-merge patches as "
                                   "merge patches and does not support $-directives")
            ctype = MERGE_PATCH
        if ctype == MERGE_PATCH:
            if not isinstance(body, dict):
                raise status_error(400, "BadRequest", "a merge patch must be a JSON object")
        elif ctype == JSON_PATCH:
            if not isinstance(body, list):
                raise status_error(400, "BadRequest", "a JSON patch must be a JSON array")
        else:
            raise status_error(415, "UnsupportedMediaType",
                               "the body of the request was in an unknown format "
                               f"({ctype or 'none'}) - "
                               f"accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                               f"{STRATEGIC_MERGE_PATCH} (server-side apply is not emulated)")
        return body

    @staticmethod
    def _field_validation(request: rendering.Request) -> str:
        """``?fieldValidation=``, ``Warn`` when absent (fieldValidation() in
        staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go)."""
        directive = request.params.get("fieldValidation") or "Warn"
        if directive not in ("Ignore", "Warn", "Strict"):
            raise status_error(400, "BadRequest",
                               f'fieldValidation must be one of "Ignore", "Warn" or "Strict", '
                               f'got "{directive}"')
        return directive

    @staticmethod
    def _strict_error(unknown: list[str]) -> str:
        # runtime.NewStrictDecodingError (staging/src/k8s.io/apimachinery/pkg/runtime/error.go)
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown)

    def _decode_error(self, body: dict, res: resource, unknown: list[str]) -> KubernetesError:
        """A create/update body with unknown fields under ``Strict``: transformDecodeError in
        staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go."""
        kind = body.get("kind") or self.resources[res].kind
        version = str(body.get("apiVersion") or group_version(res)).rpartition("/")[2]
        return status_error(400, "BadRequest",
                            f'{kind} in version "{version}" cannot be handled as a '
                            f'{self.resources[res].kind}: {self._strict_error(unknown)}')

    @staticmethod
    def _respond(obj: dict, status: int = 200, unknown: Iterable[str] = (),
                 directive: str = "Ignore") -> aiohttp.web.StreamResponse:
        response = aiohttp.web.json_response(obj, status=status)
        if directive == "Warn":  # staging/src/k8s.io/apiserver/pkg/warning: 299 - "<text>"
            for path in unknown:
                response.headers.add("Warning", "299 - " + json.dumps(f'unknown field "{path}"'))
        return response

    async def _serve_create(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """POST to a collection."""
        res = request.resource
        info = self.resources[res]
        directive = self._field_validation(request)
        body = copy.deepcopy(request.data)
        if not isinstance(body, dict):
            raise status_error(400, "BadRequest", "the body of a create must be a JSON object")
        meta = body["metadata"] = dict(body.get("metadata") or {})
        has_status = "status" in info.subresources
        async with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            if not meta.get("name"):
                raise status_error(422, "Invalid", "metadata.name: Required value: name or "
                                   "generateName is required")
            if info.namespaced is False:
                meta.pop("namespace", None)
            elif request.namespace:
                if meta.get("namespace", request.namespace) != request.namespace:
                    raise status_error(400, "BadRequest",
                                       "the namespace of the provided object does "
                                       "not match the namespace sent on the request")
                meta["namespace"] = request.namespace
            key = self._key(res, meta.get("namespace"), meta["name"])
            if key in self._objects and not self._objects[key].deleted:
                # apierrors.NewAlreadyExists
                raise status_error(409, "AlreadyExists",
                                   f'{qualified(res)} "{meta["name"]}" already exists',
                                   name=meta["name"], group=res.group, kind=res.plural)
            if has_status:
                body.pop("status", None)
            if self._store_of(res) == SERVICES:
                # PrepareForCreate resets the status; an empty ServiceStatus serializes as
                # {loadBalancer: {}} (pkg/registry/core/service/strategy.go).
                body["status"] = {"loadBalancer": {}}
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            body.setdefault("apiVersion", group_version(res))
            body.setdefault("kind", info.kind)
            body, unknown, errors = self._validate(res, body)
            if unknown and directive == "Strict":
                raise self._decode_error(request.data, res, unknown)
            self._raise_invalid(res, body, errors)
            self._admit_owner_references(request, res, body, None)
            body = self._bump({**body, "apiVersion": group_version(self._store_of(res))})
            if key in self._objects:
                self._objects[key].create(body)
            else:
                self._objects[key] = body
            if self._store_of(res) == CRDS:
                self.add_crd(body)
            raw = self._objects[key].raw
            await self._emit(key[0], "ADDED", raw)
        if raw["metadata"].get("ownerReferences"):
            self._wake_collector()
        return self._respond(self._present(raw, res), 201, unknown, directive)

    def _apply_patch(self, request: rendering.Request, res: resource, old: dict) -> dict:
        """The new object of a PATCH or PUT, before subresource rules and validation."""
        try:
            if request.method.value == "PUT":
                new = copy.deepcopy(request.data)
                if not isinstance(new, dict):
                    raise status_error(400, "BadRequest", "a PUT body must be a JSON object")
                sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                    raise status_error(409, "Conflict",
                                       f'Operation cannot be fulfilled on {qualified(res)} '
                                       f'"{request.name}": the object has been modified; please '
                                       'apply your changes to the latest version and try again')
                return new
            return dict(dicts.patch_dict(copy.deepcopy(old), self._patch_body(request, res)))
        except jsonpatch.JsonPatchTestFailed as e:
            raise status_error(422, "Invalid",
                               "the server rejected our request due to an error in our request: "
                               f"{e}") from e
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, ValueError,
                TypeError) as e:
            raise status_error(422, "Invalid",
                               f"the server rejected our request: {e}") from e  # code: a guess

    async def _serve_update(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """PUT or PATCH of an object or its status."""
        res = request.resource
        info = self.resources[res]
        directive = self._field_validation(request)
        has_status = "status" in info.subresources
        async with self._lock:
            key = self._key(res, request.namespace, request.name)
            old = copy.deepcopy(self._stored(res, request.namespace, request.name))
            new = self._apply_patch(request, res, self._present(old, res))
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
            for k in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp",
                      "generation"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            meta["resourceVersion"] = old["metadata"].get("resourceVersion")
            ignored = {"metadata", "status", "apiVersion"} if has_status else {"metadata",
                                                                               "apiVersion"}
            if without(final, ignored) != without(old, ignored):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            final, unknown, errors = self._validate(res,
                                                    {**final, "apiVersion": group_version(res)})
            if unknown and directive == "Strict":
                if request.method.value == "PUT":
                    raise self._decode_error(request.data, res, unknown)
                # a patch: jsonPatcher.applyPatchToCurrentObject in handlers/patch.go
                why = f'Invalid value: {json.dumps(json.dumps(new))}: {self._strict_error(unknown)}'
                raise status_error(422, "Invalid", f' "" is invalid: patch: {why}',
                                   causes=[{"reason": "FieldValueInvalid", "message": why,
                                       "field": "patch"}])
            self._raise_invalid(res, final, errors)
            self._admit_owner_references(request, res, final, old)
            final["apiVersion"] = old.get("apiVersion", final["apiVersion"])
            if final == old:                                 # a no-op keeps the resourceVersion
                return self._respond(self._present(old, res), 200, unknown, directive)
            final = await self._commit(key, final)
        if any(final["metadata"].get(k) != old["metadata"].get(k) for k in ("ownerReferences",
                                                                            "finalizers")):
            self._wake_collector()
        return self._respond(self._present(final, res), 200, unknown, directive)

    async def _commit(self, key: tuple, final: dict) -> dict:
        """Store a new state (under the lock); an object being deleted whose last finalizer is
        gone is deleted."""
        final = self._bump(final)
        self._objects[key].history.append(final)
        if final["metadata"].get("deletionTimestamp") and not final["metadata"].get("finalizers"):
            self._objects[key].delete()
            await self._emit(key[0], "DELETED", final)
        else:
            await self._emit(key[0], "MODIFIED", final)
        return final

    @staticmethod
    def _delete_options(request: rendering.Request) -> tuple[str | None, dict]:
        """propagationPolicy and preconditions, from the DeleteOptions body or the query
        (ValidateDeleteOptions in staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation)."""
        body = request.data if isinstance(request.data, dict) else {}
        policy = body.get("propagationPolicy") or request.params.get("propagationPolicy")
        orphan = body.get("orphanDependents", request.params.get("orphanDependents"))
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise status_error(422, "Invalid",
                               f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                               f'Unsupported value: "{policy}": supported values: "Foreground", '
                               '"Background", "Orphan"')
        if orphan is not None:
            if policy is not None:
                raise status_error(422, "Invalid",
                                   'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                                   'Invalid value: "": orphanDependents and deletionPropagation '
                                   'cannot be both set')
            policy = "Orphan" if orphan in (True, *GO_TRUE) else "Background"
        return policy, body.get("preconditions") or {}

    async def _serve_delete(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """DELETE of an object (with DeleteOptions)."""
        res = request.resource
        policy, preconditions = self._delete_options(request)
        async with self._lock:
            stored = self._stored(res, request.namespace, request.name)
            for field in ("uid", "resourceVersion"):
                want, have = preconditions.get(field), stored["metadata"].get(field)
                if want and want != have:
                    label = "UID" if field == "uid" else "ResourceVersion"
                    raise status_error(409, "Conflict",
                                       f"Operation cannot be fulfilled on {qualified(res)} "
                                       f'"{request.name}": Precondition failed: {label} in '
                                       f"precondition: {want}, {label} in object meta: {have}")
            result = await self._delete(self._key(res, request.namespace, request.name), policy)
        self._wake_collector()
        return aiohttp.web.json_response(self._present(result, res))

    async def _delete(self, key: tuple, policy: str | None) -> dict:
        """Delete a stored object (under the lock), for the API and the garbage collector: the
        GC finalizers first (deletionFinalizersForGarbageCollection and shouldOrphanDependents in
        staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go); with finalizers the
        object only gets a deletionTimestamp. Returns the object as the response shows it."""
        obj = copy.deepcopy(self._objects[key].raw)
        meta = obj["metadata"]
        current = list(meta.get("finalizers") or [])
        if policy is None:
            store = key[0]
            by_default = (store.group, store.version, store.plural) in ORPHAN_BY_DEFAULT
            policy = ("Orphan" if ORPHAN in current else
                      "Foreground" if FOREGROUND in current else
                      "Orphan" if by_default else "Background")
        finalizers = [f for f in current if f not in (ORPHAN, FOREGROUND)]
        finalizers += {"Orphan": [ORPHAN], "Foreground": [FOREGROUND]}.get(policy, [])
        if not finalizers and not meta.get("deletionTimestamp"):
            self._objects[key].delete()
            await self._emit(key[0], "DELETED", self._bump(obj))
            return obj
        if finalizers == current and meta.get("deletionTimestamp"):
            return self._objects[key].raw  # already being deleted
        if finalizers:
            meta["finalizers"] = finalizers
        else:
            meta.pop("finalizers", None)
        if not meta.get("deletionTimestamp"):
            meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
        return await self._commit(key, obj)
