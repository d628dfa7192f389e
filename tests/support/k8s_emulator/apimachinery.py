"""What the apiserver's machinery does for every resource: Status errors, label and field
selectors, structural-schema pruning, version priority, and request parsing (kmock 0.8's
parser with the namespaces path fixed)."""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

import aiohttp.web
import attrs
from kmock import action, resource
from kmock._internal import enums, parsing, rendering  # private: kmock==0.8 is pinned
from kmock._internal.k8s import KubernetesError

CRD_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
CRDS = resource("apiextensions.k8s.io/v1/customresourcedefinitions")
NAMESPACES = resource("v1/namespaces")
SERVICES = resource("v1/services")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# The apiserver's watch cache keeps at least the last 75 s of events per resource (up to
# 100*1024; staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go). Test runs are short,
# so a count stands in for that window; tests lower it to provoke 410 Expired.
WATCH_CACHE_SIZE = 1000

ORPHAN = "orphan"                  # metav1.FinalizerOrphanDependents
FOREGROUND = "foregroundDeletion"  # metav1.FinalizerDeleteDependents
# Resources whose DefaultGarbageCollectionPolicy is OrphanDependents (for back compatibility):
# pkg/registry/batch/job/strategy.go, pkg/registry/core/replicationcontroller/strategy.go.
ORPHAN_BY_DEFAULT = {("batch", "v1", "jobs"), ("", "v1", "replicationcontrollers")}

# metav1.ObjectMeta's fields: anything else under metadata is an unknown field.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields"})




# ------------------------------------------------------------------------------------ helpers
def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_error(code: int, reason: str, message: str, **details: Any) -> KubernetesError:
    """A v1 ``Status`` error (rendered by ``KubernetesScaffold._render_error``)."""
    return KubernetesError(status=code, reason=reason, message=message, details=details or {})


def qualified(res: resource) -> str:
    """schema.GroupResource.String(): ``benchmarks.testbed.dev``, or ``configmaps``."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


def not_found(res: resource, name: str | None) -> KubernetesError:
    # apierrors.NewNotFound (staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go)
    return status_error(404, "NotFound", f'{qualified(res)} "{name}" not found',
                        name=name, group=res.group, kind=res.plural)


def group_version(res: resource) -> str:
    return f"{res.group}/{res.version}" if res.group else res.version


def without(obj: dict, keys: Iterable[str]) -> dict:
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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(obj: Any, schema: dict, path: str = "", unknown: list[str] | None = None) -> Any:
    """Drop the fields a structural schema does not declare, as the apiserver does
    (staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go); the
    paths dropped go to ``unknown`` (``spec.x``, ``spec.items[0].y``), which is what
    ``fieldValidation`` reports."""
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if isinstance(obj, dict) and isinstance(schema.get("properties"), dict):
        props, out = schema["properties"], {}
        for k, v in obj.items():
            if k in props:
                out[k] = prune(v, props[k], _join(path, k), unknown)
            elif preserve:
                out[k] = v
            elif unknown is not None:
                unknown.append(_join(path, k))
        return out
    if preserve:
        return obj
    if isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: prune(v, schema["additionalProperties"], _join(path, k), unknown)
                for k, v in obj.items()}
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(obj)]
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


def match_fields(obj: dict, selector: str | None) -> bool:
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


def has_smp_directives(node: Any) -> bool:
    if isinstance(node, dict):
        return any(str(k).startswith("$") or has_smp_directives(v) for k, v in node.items())
    if isinstance(node, list):
        return any(has_smp_directives(v) for v in node)
    return False


GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # what the apiserver's strconv.ParseBool accepts
_NAMESPACE_PATH = re.compile(
    r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<sub>status|finalize))?)?/?")


async def parse_request(raw_request: aiohttp.web.BaseRequest, id: int) -> rendering.Request:
    """``rendering.Request._parse``, except that ``/api/v1/namespaces[/NAME]`` is the namespaces
    resource (kmock 0.8 raises on the first and misreads the second)."""
    m = _NAMESPACE_PATH.fullmatch(raw_request.path)
    if m is None:
        request = await rendering.Request._parse(raw_request, id=id)
        if (request.resource is not None and request.method == enums.method.GET
                and request.params.get("watch") in GO_TRUE and request.action != action.WATCH):
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


def header(request: rendering.Request, name: str) -> str:
    name = name.lower()
    return next((v for k, v in request.headers.items() if k.lower() == name), "")


# ----------------------------------------------------------------------------------- versions
_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple:
    """A sort key putting versions in Kubernetes' priority order: GA > beta > alpha, higher
    numbers first, non-Kubernetes-like names last and alphabetically
    (staging/src/k8s.io/apimachinery/pkg/version/helpers.go CompareKubeAwareVersionStrings)."""
    m = _KUBE_VERSION.match(version)
    if m is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m[2]]
    return (stage, -int(m[1]), -int(m[3] or 0), "")
