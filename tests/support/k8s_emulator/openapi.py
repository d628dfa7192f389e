"""``/openapi/v3`` documents built from the registered CRD schemas."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kmock import ResourceInfo, resource

from .apimachinery import JSON_PATCH, MERGE_PATCH

_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_META_SCHEMAS = {
    _OBJECT_META: {"type": "object",
                   "description": "ObjectMeta is metadata that all persisted resources must have.",
                   "properties": {
                       **{k: {"type": "string"} for k in ("name", "generateName", "namespace",
                                                          "uid",
                                                           "resourceVersion", "selfLink")},
                       "generation": {"type": "integer", "format": "int64"},
                       "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
                       "creationTimestamp": {"type": "string", "format": "date-time"},
                       "deletionTimestamp": {"type": "string", "format": "date-time"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "annotations": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                       "finalizers": {"type": "array", "items": {"type": "string"}},
                       "ownerReferences": {"type": "array", "items": {"type": "object"}},
                       "managedFields": {"type": "array", "items": {"type": "object"}}}},
    _LIST_META: {"type": "object", "properties": {
        "resourceVersion": {"type": "string"}, "continue": {"type": "string"},
        "remainingItemCount": {"type": "integer", "format": "int64"}}},
}


def _param(name: str, where: str = "query", description: str = "") -> dict:
    return {"name": name, "in": where, "description": description,
            "schema": {"type": "string", "uniqueItems": True},
            **({"required": True} if where == "path" else {})}


_WRITE_PARAMS = [_param("dryRun"), _param("fieldManager"), _param(
    "fieldValidation",
    description="fieldValidation instructs the server on how to handle objects in the "
    "request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, "
    "Warn "
    "(the default), Strict.")]


def _schema_name(group: str, version: str, kind: str) -> str:
    return ".".join([*reversed(group.split(".")), version, kind])


def _operation(verb: str, gvk: dict, schema_ref: dict | None, params: list[dict] | None = None,
               body: dict | None = None, patch: bool = False) -> dict:
    op: dict[str, Any] = {"x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
                          "parameters": list(params or []),
                          "responses": {"200": {"description": "OK", "content": {
                              "application/json": {"schema": schema_ref or {"type": "object"}}}}}}
    if body is not None:
        types = [JSON_PATCH, MERGE_PATCH, "application/apply-patch+yaml"] if patch else ["*/*"]
        op["requestBody"] = {"required": True, "content": {t: {"schema": body} for t in types}}
    return op


def _ref(schema: str) -> dict:
    return {"$ref": f"#/components/schemas/{schema}"}


def openapi_document(resources: list[resource], infos: dict[resource, ResourceInfo],
                     schemas_by_resource: dict[resource, dict]) -> dict:
    """The OpenAPI v3 document of one CRD group-version's ``resources``
    (staging/src/k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder/builder.go,
    reduced to what clients read: paths with their GVK and parameters, and the schemas)."""
    schemas = copy.deepcopy(_META_SCHEMAS)
    paths: dict[str, dict] = {}
    for res in resources:
        info = infos[res]
        gvk = {"group": res.group, "version": res.version, "kind": info.kind}
        name = _schema_name(res.group, res.version, info.kind)
        ref, list_ref = _ref(name), _ref(name + "List")
        schema = copy.deepcopy(schemas_by_resource[res])
        schema.setdefault("properties", {})["metadata"] = {
            "allOf": [_ref(_OBJECT_META)], "description": "Standard object's metadata."}
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
        schemas[name + "List"] = {
            "type": "object", "required": ["items"],
            "x-kubernetes-group-version-kind": [{**gvk, "kind": info.kind + "List"}],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "items": {"type": "array", "items": ref},
                           "metadata": _ref(_LIST_META)}}
        scope = [_param("namespace", "path")] if info.namespaced else []
        base = (f"/apis/{res.group}/{res.version}"
                + ("/namespaces/{namespace}" if info.namespaced else "") + f"/{res.plural}")
        paths[base] = {"parameters": [*scope, _param("pretty")],
                       "get": _operation("list", gvk, list_ref),
                       "post": _operation("post", gvk, ref, _WRITE_PARAMS, ref)}
        item = {"parameters": [_param("name", "path"), *scope, _param("pretty")],
                "get": _operation("get", gvk, ref),
                "put": _operation("put", gvk, ref, _WRITE_PARAMS, ref),
                "patch": _operation("patch", gvk, ref, [*_WRITE_PARAMS, _param("force")],
                                    {"type": "object"}, True),
                "delete": _operation("delete", gvk, None)}
        paths[base + "/{name}"] = item
        if "status" in info.subresources:
            paths[base + "/{name}/status"] = {k: item[k]
                                              for k in ("parameters", "get", "put", "patch")}
    return {"openapi": "3.0.0",
            "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_index(docs: dict[str, dict]) -> dict:
    """``/openapi/v3``: where each group-version's document is, with a content hash
    (staging/src/k8s.io/kube-openapi/pkg/handler3/handler.go)."""
    def url(gv: str, doc: dict) -> str:
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()
        return f"/openapi/v3/{gv}?hash={digest}"

    return {"paths": {gv: {"serverRelativeURL": url(gv, doc)} for gv, doc in sorted(docs.items())}}
