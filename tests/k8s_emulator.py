"""An in-memory Kubernetes API for the operator tests: kmock's emulator with the gaps filled.

``PatchedEmulator`` subclasses ``kmock.KubernetesEmulator`` (kmock 0.8) and fixes what the
operator tests (Kopf, the ``kubernetes`` client, the fake controllers, ``kubectl``) trip over.
Each gap below has a stock-vs-patched test in ``tests/test_k8s_emulator.py``, which also asserts
the *stock* behaviour, so a kmock release that fixes a gap upstream shows up as a failing stock
case; ``tests/test_kubectl.py`` drives the real ``kubectl`` against it. Where the behaviour comes
from the Kubernetes sources, the upstream file is named next to the code.

Gaps fixed (stock kmock 0.8 → this subclass):

* **Stamping.** Stock kmock stores the POSTed body as is: no ``resourceVersion``, ``uid``,
  ``creationTimestamp`` or ``generation``, not even ``metadata.namespace`` for a namespaced URL.
  Here, objects get all of them; ``resourceVersion`` is one global counter bumped by every
  change; ``generation`` is bumped by changes outside ``metadata`` (and outside ``status`` where
  the resource has a status subresource). No-op patches keep the ``resourceVersion``.
  ``generateName`` works. A create answers 201 (stock: 200), like the apiserver, and a create
  of an undeclared resource is 404 (stock kmock declares it on the fly). A created Service gets
  ``status: {loadBalancer: {}}`` as the apiserver's Service strategy gives it.
* **JSON-patch ``test`` op.** A failing ``test`` gives 500 in stock kmock, so Kopf's finalizer
  patch (``test /metadata/resourceVersion``) fails, Kopf throttles, and handlers never run. Here
  it is 422 ``Invalid``, like the apiserver.
* **Watches.** Stock ``_serve_watch`` snapshots the objects, streams the snapshot (suspending on
  back-pressure), and only then subscribes to the event bus: events published in between are
  lost. It also ignores ``resourceVersion`` (a LIST → DELETE → WATCH loses the deletion) and
  ``timeoutSeconds``, and answers ``Content-Type: application/octet-stream``, which client-go
  (``kubectl get -w``, ``kubectl wait``) cannot decode. Here, the snapshot (or the replay of the
  event log after ``?resourceVersion=N``) and the subscription are atomic under the lock that
  every mutation holds while publishing, ``timeoutSeconds`` ends the stream, the content type
  is the apiserver's, and a ``resourceVersion`` older than the emulator keeps (the last
  ``watch_cache_size`` events per resource) gets one ``ERROR`` event with a 410 ``Expired``
  ``Status``, as the apiserver's watch cache does. There are no BOOKMARK events.
* **Status subresource.** Stock kmock applies any patch anywhere. Here, where the resource
  declares ``status``: the main endpoint ignores ``.status``, ``/status`` changes only
  ``.status``, and a create drops ``.status``. Other subresources (``scale``, ``log``…) are 404.
* **Schema validation.** Stock kmock accepts anything. Here, CRDs registered with
  :meth:`PatchedEmulator.add_crd` (or POSTed as ``CustomResourceDefinition`` objects) prune unknown
  fields like the apiserver (honouring ``x-kubernetes-preserve-unknown-fields``) and validate with
  JSON-Schema **draft 4**, which is what OpenAPI v3.0 means (``exclusiveMinimum: true`` is a
  boolean; newer drafts read it as the number 1). Failures are 422 ``Invalid`` ``Status`` objects
  with ``details.causes``. Unknown fields follow ``?fieldValidation=``: ``Strict`` rejects them
  (400 on create/update, 422 on patch, the apiserver's messages), ``Warn`` (the default) answers
  with ``Warning: 299`` headers, ``Ignore`` drops them silently. Built-in kinds are not validated.
* **Versions.** Every served version of a CRD is one storage: an object created through one
  version is visible through the others with ``apiVersion`` rewritten (conversion ``None``).
* **Discovery.** Stock ``/api/v1`` reports ``groupVersion: "/v1"`` (kubectl then knows no core
  resource) and ``preferredVersion`` is an arbitrary served version (for ``ray.io``, often
  ``v1alpha1``). Here ``/api/v1`` says ``v1``, versions are ordered by Kubernetes' version
  priority (v1 > v1beta1 > v1alpha1), and ``<plural>/status`` lists the verbs it has.
* **Tables.** Stock kmock ignores ``Accept``. Here ``Accept: application/json;as=Table;v=v1;
  g=meta.k8s.io`` (what ``kubectl get`` sends) answers a ``meta.k8s.io`` ``Table``: a CRD's
  ``additionalPrinterColumns`` (JSONPath per object, ``priority`` kept, dates as ages) after
  ``Name``, or the default Name/Created At table for other kinds, with ``?includeObject=``.
* **OpenAPI.** Stock kmock has no ``/openapi``. Here ``/openapi/v3`` and
  ``/openapi/v3/apis/<group>/<version>`` are built from the registered CRD schemas, so
  ``kubectl apply`` validates server-side with ``fieldValidation=Strict``.
* **``/version/``** (with the slash, as kr8s asks) is served as well as ``/version``.
* **Garbage collection.** Stock kmock ignores ``ownerReferences``. Here a small collector (run as
  a task after the change that needs it, as the real one is a controller) deletes dependents
  whose owners are gone, honouring ``propagationPolicy`` (``Background`` by default,
  ``Orphan`` by default for batch/v1 Jobs and ReplicationControllers, ``Foreground``) and the
  ``orphan``/``foregroundDeletion`` finalizers; ``blockOwnerDeletion`` holds a foreground owner.
* **Authorization (opt-in).** With :attr:`PatchedEmulator.authorizer` set (see
  :func:`rbac_authorizer`), every resource request is authorized for its user (the bearer
  token is the user name) and the ``OwnerReferencesPermissionEnforcement`` admission rule
  applies: ``blockOwnerDeletion: true`` needs ``update`` on the owner's ``<resource>/finalizers``.
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
  only real server-side failures (500s) worth asserting on. Not-found and conflict messages are
  the apiserver's (``benchmarks.testbed.dev "x" not found``).

Not emulated (by design): admission other than the rule above, defaulting other than the
Service status, server-side apply, ``dryRun``, ``deletecollection``, namespace deletion cascades,
BOOKMARK events, the dedicated printers of built-in kinds (they get the default table), OpenAPI
schemas of built-in kinds (so ``kubectl apply`` of a built-in kind needs ``--validate=false``).
Resource requests are answered by the subclass directly: kmock's DSL reactions
(``emulator[...] << 500``) only apply to other paths; use :attr:`PatchedEmulator.faults`.

This module relies on kmock internals (``kmock._internal``, the private ``_objects``, ``_buses``,
``_lock``, ``_requests``, and the shape of ``RawHandler.__call__``), hence the ``kmock==0.8`` pin in
``pyproject.toml``. Helpers: :func:`load_crds`, :func:`serve_emulator`, :func:`write_kubeconfig`.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import functools
import hashlib
import importlib.util
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
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
from kmock._internal.k8s import KubernetesError

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_CRD = ROOT / "operator" / "crds" / "benchmark.yaml"
KUBERAY_DIR = ROOT.parent / "shared" / "schemas" / "kuberay"  # read in place, never copied
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
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, **details: Any) -> KubernetesError:
    """A v1 ``Status`` error (rendered by ``KubernetesScaffold._render_error``)."""
    return KubernetesError(status=code, reason=reason, message=message, details=details or {})


def _qualified(res: resource) -> str:
    """schema.GroupResource.String(): ``benchmarks.testbed.dev``, or ``configmaps``."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _not_found(res: resource, name: str | None) -> KubernetesError:
    # apierrors.NewNotFound (staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go)
    return _status(404, "NotFound", f'{_qualified(res)} "{name}" not found',
                   name=name, group=res.group, kind=res.plural)


def _gv(res: resource) -> str:
    return f"{res.group}/{res.version}" if res.group else res.version


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


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _prune(obj: Any, schema: dict, path: str = "", unknown: list[str] | None = None) -> Any:
    """Drop the fields a structural schema does not declare, as the apiserver does
    (staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go); the
    paths dropped go to ``unknown`` (``spec.x``, ``spec.items[0].y``), which is what
    ``fieldValidation`` reports."""
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if isinstance(obj, dict) and isinstance(schema.get("properties"), dict):
        props, out = schema["properties"], {}
        for k, v in obj.items():
            if k in props:
                out[k] = _prune(v, props[k], _join(path, k), unknown)
            elif preserve:
                out[k] = v
            elif unknown is not None:
                unknown.append(_join(path, k))
        return out
    if preserve:
        return obj
    if isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: _prune(v, schema["additionalProperties"], _join(path, k), unknown)
                for k, v in obj.items()}
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [_prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(obj)]
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


def _header(request: rendering.Request, name: str) -> str:
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


# ------------------------------------------------------------------------------------- tables
# metav1.ObjectMeta{}.SwaggerDoc() for the columns every Table starts with.
_NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, "
             "although "
             "some resources may allow a client to request the generation of an appropriate name "
             "automatically. Name is primarily intended for creation idempotence and configuration "
             "definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
_CREATED_DOC = ("CreationTimestamp is a timestamp representing the server time when this object "
                "was "
                "created. It is not guaranteed to be set in happens-before order across separate "
                "operations. Clients may not set this value. It is represented in RFC3339 form and "
                "is "
                "in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "description": _NAME_DOC,
                "priority": 0}
# What a CRD version without additionalPrinterColumns is served with: serveDefaultColumnsIfEmpty
# in staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go.
_DEFAULT_CRD_COLUMNS = [{"name": "Age", "type": "date", "description": _CREATED_DOC,
                         "jsonPath": ".metadata.creationTimestamp"}]
TABLE_INCLUDE = ("", "Metadata", "Object", "None")  # metav1.IncludeObjectPolicy


def human_duration(seconds: float) -> str:
    """duration.HumanDuration (staging/src/k8s.io/apimachinery/pkg/util/duration/duration.go)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(timestamp: str) -> str:
    """metatable.ConvertToHumanReadableDateType of a ``metav1.Time`` query parameter
    (staging/src/k8s.io/apimachinery/pkg/api/meta/table/table.go)."""
    if not timestamp:
        return "<unknown>"
    try:
        when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    if when.tzinfo is None:
        return "<invalid>"
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


_JSONPATH_STEP = re.compile(r"""\.(?P<field>[^.\[\]]+) | \[(?P<bracket>(?:'[^']*'|"[^"]*"|[^\]])*)\]""", re.X)
_FILTER = re.compile(r"""\?\(@((?:\.[^.\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)""")


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def jsonpath_find(obj: Any, path: str) -> list[Any]:
    """The values a Kubernetes JSONPath (a CRD printer column: ``.status.phase``, ``.a[0].b``,
    ``.a[*]``, ``['x.y']``, ``[?(@.type=="Ready")].status``) finds in ``obj``, missing keys
    allowed (staging/src/k8s.io/client-go/util/jsonpath/jsonpath.go, a subset).
    ``ValueError`` if the path cannot be parsed."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    if path.startswith("$"):
        path = path[1:]
    nodes, pos = [obj], 0
    while pos < len(path):
        m = _JSONPATH_STEP.match(path, pos)
        if m is None:
            raise ValueError(f"unrecognized JSONPath {path!r} at {pos}")
        pos = m.end()
        out: list[Any] = []
        key = m["field"]
        inner = (m["bracket"] or "").strip() if key is None else None
        if key is None and inner and inner[0] in "'\"":
            key = _literal(inner)
        if key is not None:
            for n in nodes:
                if key == "*" and isinstance(n, (dict, list)):
                    out += list(n.values()) if isinstance(n, dict) else list(n)
                elif isinstance(n, dict) and key in n:
                    out.append(n[key])
        elif inner == "*":
            for n in nodes:
                out += list(n.values()) if isinstance(n, dict) else list(n) if isinstance(n,
                                                                                          list) else []
        elif re.fullmatch(r"-?\d+", inner):
            i = int(inner)
            out = [n[i] for n in nodes if isinstance(n, list) and -len(n) <= i < len(n)]
        elif re.fullmatch(r"-?\d*:-?\d*", inner):
            a, b = inner.split(":")
            for n in nodes:
                if isinstance(n, list):
                    out += n[int(a) if a else None:int(b) if b else None]
        elif (f := _FILTER.fullmatch(inner)) is not None:
            keys = [k for k in f[1].split(".") if k]
            for n in nodes:
                for item in (n if isinstance(n, list) else []):
                    found = jsonpath_find(item, "".join(f".{k}" for k in keys)) if keys else [item]
                    if f[2] is None:
                        ok = bool(found)
                    elif not found:
                        ok = False
                    else:
                        a, b = found[0], _literal(f[3])
                        try:
                            ok = {"==": a == b, "!=": a != b}.get(f[2]) if f[2] in ("==",
                                                                                    "!=") else \
                                {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[f[2]]
                        except TypeError:
                            ok = False
                    if ok:
                        out.append(item)
        else:
            raise ValueError(f"unrecognized JSONPath {path!r}: [{inner}]")
        nodes = out
    return nodes


def _go_text(value: Any) -> str:
    """How jsonpath's PrintResults prints one value: maps and lists as compact JSON, scalars as
    Go's fmt.Fprint would."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    return str(value)


def _cell(column: dict, obj: dict) -> Any:
    """One cell of a CRD printer column: ConvertToTable and cellForJSONValue in
    staging/src/k8s.io/apiextensions-apiserver/pkg/registry/customresource/tableconvertor/tableconvertor.go."""
    try:
        found = jsonpath_find(obj, column["jsonPath"])
    except ValueError:
        return None
    if not found:
        return None
    value, kind = found[0], column.get("type")
    if kind == "string":
        return _go_text(value)
    if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        return _age(value)
    return None


# --------------------------------------------------------------------------------------- RBAC
@dataclass(frozen=True)
class Attributes:
    """What is authorized: authorizer.AttributesRecord, the fields RBAC reads
    (staging/src/k8s.io/apiserver/pkg/authorization/authorizer/interfaces.go)."""
    user: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None


def rule_allows(rule: dict, a: Attributes) -> bool:
    """One ``rbac.authorization.k8s.io/v1`` PolicyRule against a resource request: RuleAllows in
    pkg/apis/rbac/v1/evaluation_helpers.go (``*`` wildcards, ``*/subresource``, resourceNames)."""
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource

    def resource_matches(r: str) -> bool:
        return r in ("*", combined) or bool(
            a.subresource and r.startswith("*/") and r[2:] == a.subresource)

    return (any(v in ("*", a.verb) for v in rule.get("verbs") or [])
            and any(g in ("*", a.group) for g in rule.get("apiGroups") or [])
            and any(resource_matches(r) for r in rule.get("resources") or [])
            and (not rule.get("resourceNames") or a.name in rule["resourceNames"]))


def rbac_authorizer(rules_by_user: dict[str, Iterable[dict]]) -> Callable[[Attributes], bool]:
    """An authorizer for :attr:`PatchedEmulator.authorizer`: each user may do what the rules of
    the roles bound to it allow (in every namespace: bindings are not modelled)."""
    rules = {user: list(rs) for user, rs in rules_by_user.items()}
    return lambda a: any(rule_allows(r, a) for r in rules.get(a.user, []))


_REQUEST_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_verb(request: rendering.Request) -> str:
    """The verb of a resource request (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)."""
    method = request.method.value
    if method == "GET":
        return "watch" if request.params.get("watch") in _GO_TRUE else "get" if request.name else "list"
    if method == "DELETE":
        return "delete" if request.name else "deletecollection"
    return _REQUEST_VERBS.get(method, method.lower())


def _forbidden(res: resource, name: str | None, why: str) -> KubernetesError:
    # apierrors.NewForbidden (staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go)
    where = f'{_qualified(res)} "{name}"' if name else _qualified(res)
    return _status(403, "Forbidden", f"{where} is forbidden: {why}",
                   name=name, group=res.group, kind=res.plural)


# ------------------------------------------------------------------------------------ OpenAPI
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


# ----------------------------------------------------------------------------------- emulator
REQUEST_WINDOW = 32  # kmock scans this list once per DSL reaction for every request


@attrs.define(kw_only=True)
class PatchedEmulator(KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with the gaps listed in the module docstring fixed."""

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
            self._columns[res] = version.get("additionalPrinterColumns") or _DEFAULT_CRD_COLUMNS
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
        gv = _gv(res)
        return obj if obj.get("apiVersion") == gv else {**obj, "apiVersion": gv}

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
        obj = {**_prune(obj, schema, "", unknown), **keep,
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
                       "field": "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path).lstrip(".")}
                      for e in errors]
            kind, name = self.resources[res].kind, obj.get("metadata", {}).get("name")
            raise _status(422, "Invalid", f'{kind}.{res.group} "{name}" is invalid: '
                          + "; ".join(f"{c['field']}: {c['message']}" for c in causes),
                          name=name, group=res.group, kind=kind, causes=causes)

    # ------------------------------------------------------------------------------ events
    def _bump(self, obj: dict) -> dict:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return obj

    async def _emit(self, res: resource, etype: str, raw: dict) -> None:
        """Log and publish an event of a storage resource. Always called while holding
        ``self._lock``."""
        event = {"type": etype, "object": raw}
        log = self._log[res]
        log.append((int(raw["metadata"]["resourceVersion"]), event))
        while len(log) > max(self.watch_cache_size, 1):
            log.popleft()
            self._log_trimmed.add(res)
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

    def cut_watches(self) -> int:
        """Drop every open watch connection now, as a network failure would (clients resume
        from the last resourceVersion they saw). Returns how many were cut."""
        cut = 0
        for raw in list(self._watches.values()):
            transport = raw.transport
            if transport is not None:
                transport.abort()
                cut += 1
        return cut

    # ---------------------------------------------------------------------------- routing
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Resource requests are answered here; other paths (discovery, /version, /openapi, 404s)
        # go to kmock's RawHandler (DSL reactions, then the fallbacks of KubernetesScaffold).
        for fault in self.faults:
            error = fault(request)
            if error is not None:
                self._injected.append(error)  # answered as such, not recorded as a server bug
                raise error
        res = request.resource
        if res is None or res.plural is None or res.version is None:
            return await self._serve_other(request)
        if res not in self.resources:  # stock kmock creates an unknown resource on a POST
            raise _status(404, "NotFound", "the server could not find the requested resource")
        self._authorize(request)
        info = self.resources[res]
        if request.subresource not in (None, "status") or (
                request.subresource == "status" and "status" not in info.subresources):
            raise _status(404, "NotFound", "the server could not find the requested resource")
        method = request.method.value
        if method == "GET":
            if request.params.get("watch") in _GO_TRUE:
                return await self._serve_watch_stream(request)
            return await (self._serve_get(request) if request.name else self._serve_collection(request))
        if method in ("POST", "PUT"):
            request = self._decode_body(request)
        if method == "POST" and request.name is None:
            return await self._serve_create_request(request, res, info)
        if method in ("PUT", "PATCH") and request.name is not None:
            return await self._serve_update_request(request, res, info)
        if method == "DELETE" and request.name is not None:
            return await self._serve_delete_request(request, res)
        raise _status(405, "MethodNotAllowed",
                      "the server does not allow this method on the requested "
                      "resource (not emulated)")

    @staticmethod
    def _decode_body(request: rendering.Request) -> rendering.Request:
        """The body of a create or update: JSON, or YAML; anything else (kubectl sends protobuf
        for built-in kinds) is 415, as the apiserver answers a type it has no serializer for
        (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/negotiation/errors.go)."""
        ctype = _header(request, "Content-Type").split(";")[0].strip().lower()
        if ctype == "application/json":
            return request
        if ctype == "application/yaml":
            try:
                return attrs.evolve(request, data=yaml.safe_load(request.text or ""))
            except yaml.YAMLError as e:
                raise _status(400, "BadRequest", f"error decoding YAML: {e}")
        raise _status(415, "UnsupportedMediaType",
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
                raise _status(404, "NotFound", "the server could not find the requested resource")
            return aiohttp.web.json_response(doc)
        return await apps.RawHandler._handle(self, request)

    # -------------------------------------------------------------------------- authorizing
    @staticmethod
    def _user(request: rendering.Request) -> str:
        """The caller: the bearer token stands for the user name; no token is anonymous."""
        kind, _, token = _header(request, "Authorization").partition(" ")
        return token.strip() if kind.lower() == "bearer" and token.strip() else "system:anonymous"

    def _authorize(self, request: rendering.Request) -> None:
        if self.authorizer is None:
            return
        res = request.resource
        a = Attributes(self._user(request), request_verb(request), res.group, res.plural,
                       request.subresource or "", request.namespace, request.name)
        if not self.authorizer(a):
            # forbiddenMessage in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
            what = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
            scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
            raise _forbidden(res, a.name,
                             f'User "{a.user}" cannot {a.verb} resource "{what}" in API '
                             f'group "{a.group}" {scope}')

    def _admit_owner_references(self, request: rendering.Request, res: resource,
                                new: dict, old: dict | None) -> None:
        """The OwnerReferencesPermissionEnforcement admission plugin
        (plugin/pkg/admission/gc/gc_admission.go), enforced only with an authorizer."""
        if self.authorizer is None or (res.group, res.plural, request.subresource) == ("", "pods",
                                                                                       "status"):
            return
        new_refs = (new.get("metadata") or {}).get("ownerReferences") or []
        old_refs = ((old or {}).get("metadata") or {}).get("ownerReferences") or []
        if (old is None and not new_refs) or (old is not None and new_refs == old_refs):
            return
        user, ns = self._user(request), request.namespace
        name = request.name or (new.get("metadata") or {}).get("name")
        if old is not None and not self.authorizer(Attributes(user, "delete", res.group, res.plural,
                                                              request.subresource or "", ns, name)):
            raise _forbidden(res, name,
                             "cannot set an ownerRef on a resource you can't delete: , <nil>")
        was_blocking = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion") is True}
        blocking = [r for r in new_refs if r.get("blockOwnerDeletion") is True and r.get("uid") not in was_blocking]
        if not blocking or self.authorizer(Attributes(user, "update", "*", "*", "finalizers")):
            return  # finalizeAnythingRecord
        for ref in blocking:
            group, _, version = ref.get("apiVersion", "").rpartition("/")
            mappings = [r for r in self.resources if r.group == group and r.version == version
                        and self.resources[r].kind == ref.get("kind")]
            if not mappings:
                raise _forbidden(res, name,
                                 f"cannot set blockOwnerDeletion in this case because cannot find "
                                 f"RESTMapping for APIVersion {ref.get('apiVersion')} Kind "
                                 f"{ref.get('kind')}: "
                                 f'no matches for kind "{ref.get("kind")}" in version '
                                 f'"{ref.get("apiVersion")}"')
            for owner in mappings:
                if not self.authorizer(Attributes(user, "update", group, owner.plural, "finalizers",
                                                  ns,
                                                  ref.get("name"))):
                    raise _forbidden(res, name,
                                     "cannot set blockOwnerDeletion if an ownerReference refers "
                                     "to a resource you can't set finalizers on: , <nil>")

    # ------------------------------------------------------------------------------ reads
    @staticmethod
    def _check_selectors(request: rendering.Request) -> None:
        try:
            match_labels({}, request.params.get("labelSelector"))
            _match_fields({}, request.params.get("fieldSelector"))
        except ValueError as e:
            raise _status(400, "BadRequest", str(e))

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
                and _match_fields(obj, request.params.get("fieldSelector")))

    def _stored(self, res: resource, namespace: str | None, name: str | None) -> dict:
        key = self._key(res, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            raise _not_found(res, name)
        return self._objects[key].raw

    @staticmethod
    def _table_version(request: rendering.Request) -> str | None:
        """The first acceptable media type of ``Accept``: ``None`` for plain JSON, or the
        meta.k8s.io version of a Table (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
        negotiation/negotiate.go). Only JSON is offered: anything else alone is 406."""
        accept = _header(request, "Accept").strip()
        if not accept:
            return None
        for clause in accept.split(","):
            media, *params = [p.strip() for p in clause.split(";")]
            opts = dict(p.split("=", 1) for p in params if "=" in p)
            if media not in ("application/json", "application/*", "*/*"):
                continue
            if "as" not in opts:
                return None
            if opts["as"] == "Table" and opts.get("g") == "meta.k8s.io" and opts.get("v") in ("v1",
                                                                                              "v1beta1"):
                if request.params.get("includeObject", "") not in TABLE_INCLUDE:  # handlers/response.go asTable
                    raise _status(400, "BadRequest",
                                  'unrecognized includeObject value: '
                                  f'"{request.params["includeObject"]}"')
                return opts["v"]
        raise _status(406, "NotAcceptable",
                      "only the following media types are accepted: application/json, "
                      "application/json;as=Table;v=v1;g=meta.k8s.io")

    def _table(self, request: rendering.Request, objs: list[dict], rv: str, version: str,
               headers: bool = True) -> dict:
        """A meta.k8s.io Table of ``objs`` (presented in the requested version): asTable in
        staging/src/k8s.io/apiserver/pkg/endpoints/handlers/response.go, with the CRD convertor
        (tableconvertor.go, see :func:`_cell`) or, for other kinds, the default one
        (staging/src/k8s.io/apiserver/pkg/registry/rest/table.go: Name, Created At)."""
        columns = self._columns.get(request.resource)
        if columns is None:
            definitions = [_NAME_COLUMN, {"name": "Created At", "type": "date", "format": "",
                                          "description": _CREATED_DOC, "priority": 0}]

            def cells(o: dict) -> list:
                meta = o.get("metadata") or {}
                return [meta.get("name"), meta.get("creationTimestamp") or "0001-01-01T00:00:00Z"]
        else:
            definitions = [_NAME_COLUMN] + [{
                "name": c["name"], "type": c["type"], "format": c.get("format", ""),
                "description": c.get("description") or
                f"Custom resource definition column (in JSONPath format): {c['jsonPath']}",
                "priority": c.get("priority", 0)} for c in columns]

            def cells(o: dict) -> list:
                return [(o.get("metadata") or {}).get("name")] + [_cell(c, o) for c in columns]
        include = request.params.get("includeObject", "")
        rows = []
        for o in objs:
            embedded = (o if include == "Object" else None if include == "None" else
                        {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                         "metadata": o.get("metadata") or {}})
            rows.append({"cells": cells(o), "object": embedded})
        return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
                "metadata": {"resourceVersion": rv},
                "columnDefinitions": definitions if headers else None, "rows": rows}

    async def _serve_get(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        table = self._table_version(request)
        async with self._lock:
            obj = self._present(self._stored(request.resource, request.namespace, request.name),
                                request.resource)
        if table:
            obj = self._table(request, [obj], obj["metadata"].get("resourceVersion", ""), table)
        return aiohttp.web.json_response(obj)

    async def _serve_collection(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        table = self._table_version(request)
        self._check_selectors(request)
        res = request.resource
        async with self._lock:
            items = [self._present(o, res) for o in self._select(request)]
            rv = str(self._rv)
        if table:
            return aiohttp.web.json_response(self._table(request, items, rv, table))
        return aiohttp.web.json_response({"apiVersion": _gv(res),
                                          "kind": f"{self.resources[res].kind}List",
                                          "metadata": {"resourceVersion": rv}, "items": items})

    async def _serve_watch_stream(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """A watch response as the apiserver writes it: ``Content-Type: application/json``
        (a JSON watch keeps the plain type; other encodings get ``;stream=watch``:
        serveWatchHandler in staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go),
        one JSON event per line, objects in the requested version or as Tables (column
        definitions only in the first, as watchEmbeddedEncoder does)."""
        table = self._table_version(request)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        headers_sent = False
        async with contextlib.aclosing(self._serve_watch(request)) as stream:
            try:
                await anext(stream)  # a malformed selector is a 400, before the headers go out
            except StopAsyncIteration:
                pass
            await response.prepare(request._raw_request)
            self._watches[id(response)] = request._raw_request
            try:
                async for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        obj = self._present(event["object"], request.resource)
                        if table:
                            obj = self._table(request, [obj],
                                              obj["metadata"].get("resourceVersion", ""),
                                              table, headers=not headers_sent)
                            headers_sent = True
                        event = {"type": event["type"], "object": obj}
                    await response.write(json.dumps(event).encode() + b"\n")
            except ConnectionError:
                return response  # the client left, or the connection was cut
            except Exception as e:
                raise rendering.StreamingError(response) from e
            finally:
                self._watches.pop(id(response), None)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        """The events of a watch: first ``b""`` (the headers can go), then the snapshot or the
        replay, then live events, as stored (see :meth:`_serve_watch_stream`)."""
        self._check_selectors(request)  # a malformed selector is a 400, before the stream starts
        yield b""
        res, since = self._store_of(request.resource), request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        bus = self._buses[res]
        expired = None
        # THE RACE FIX: the snapshot (or the replay) and the subscription happen atomically, under
        # the lock that every mutation holds while publishing its event.
        async with self._lock:
            mark = await bus.mark()
            if since and since.isdigit() and since != "0":
                log = self._log[res]
                oldest = log[0][0] if log else self._rv + 1
                if res in self._log_trimmed and int(since) < oldest - 1:
                    # getAllEventsSinceLocked in staging/src/k8s.io/apiserver/pkg/storage/cacher/
                    # watch_cache.go; the cacher sends it as a watch ERROR event (newErrWatcher).
                    expired = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure",
                               "message": f"too old resource version: {since} ({oldest - 1})",
                               "reason": "Expired", "code": 410}
                events = [ev for rv, ev in log if rv > int(since)]
            else:
                events = [{"type": "ADDED", "object": o} for o in self._select(request)]
        try:
            if expired is not None:
                yield {"type": "ERROR", "object": expired}
                return
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

    # -------------------------------------------------------------------------- mutations
    def _patch_body(self, request: rendering.Request, res: resource) -> Any:
        ctype = _header(request, "Content-Type").split(";")[0].strip().lower()
        body = request.data
        if ctype == STRATEGIC_MERGE_PATCH:
            if res in self._custom:
                raise _status(415, "UnsupportedMediaType",
                              f"the body of the request was in an unknown format - accepted media "
                              f"types include: {JSON_PATCH}, {MERGE_PATCH}, "
                              "application/apply-patch+yaml")
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

    @staticmethod
    def _field_validation(request: rendering.Request) -> str:
        """``?fieldValidation=``, ``Warn`` when absent (fieldValidation() in
        staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go)."""
        directive = request.params.get("fieldValidation") or "Warn"
        if directive not in ("Ignore", "Warn", "Strict"):
            raise _status(400, "BadRequest",
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
        version = str(body.get("apiVersion") or _gv(res)).rpartition("/")[2]
        return _status(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a '
                       f'{self.resources[res].kind}: {self._strict_error(unknown)}')

    @staticmethod
    def _respond(obj: dict, status: int = 200, unknown: Iterable[str] = (),
                 directive: str = "Ignore") -> aiohttp.web.StreamResponse:
        response = aiohttp.web.json_response(obj, status=status)
        if directive == "Warn":  # staging/src/k8s.io/apiserver/pkg/warning: 299 - "<text>"
            for path in unknown:
                response.headers.add("Warning", "299 - " + json.dumps(f'unknown field "{path}"'))
        return response

    async def _serve_create_request(self, request: rendering.Request, res: resource,
                                    info: ResourceInfo) -> aiohttp.web.StreamResponse:
        directive = self._field_validation(request)
        body = copy.deepcopy(request.data)
        if not isinstance(body, dict):
            raise _status(400, "BadRequest", "the body of a create must be a JSON object")
        meta = body["metadata"] = dict(body.get("metadata") or {})
        has_status = "status" in info.subresources
        async with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
            if not meta.get("name"):
                raise _status(422, "Invalid",
                              "metadata.name: Required value: name or generateName is required")
            if info.namespaced is False:
                meta.pop("namespace", None)
            elif request.namespace:
                if meta.get("namespace", request.namespace) != request.namespace:
                    raise _status(400, "BadRequest", "the namespace of the provided object does "
                                  "not match the namespace sent on the request")
                meta["namespace"] = request.namespace
            key = self._key(res, meta.get("namespace"), meta["name"])
            if key in self._objects and not self._objects[key].deleted:
                # apierrors.NewAlreadyExists
                raise _status(409, "AlreadyExists",
                              f'{_qualified(res)} "{meta["name"]}" already exists',
                              name=meta["name"], group=res.group, kind=res.plural)
            if has_status:
                body.pop("status", None)
            if self._store_of(res) == SERVICES:
                # PrepareForCreate resets the status; an empty ServiceStatus serializes as
                # {loadBalancer: {}} (pkg/registry/core/service/strategy.go).
                body["status"] = {"loadBalancer": {}}
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            body.setdefault("apiVersion", _gv(res))
            body.setdefault("kind", info.kind)
            body, unknown, errors = self._validate(res, body)
            if unknown and directive == "Strict":
                raise self._decode_error(request.data, res, unknown)
            self._raise_invalid(res, body, errors)
            self._admit_owner_references(request, res, body, None)
            body = self._bump({**body, "apiVersion": _gv(self._store_of(res))})
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
                    raise _status(400, "BadRequest", "a PUT body must be a JSON object")
                sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                    raise _status(409, "Conflict",
                                  f'Operation cannot be fulfilled on {_qualified(res)} '
                                  f'"{request.name}": the object has been modified; please apply '
                                  f'your changes to the latest version and try again')
                return new
            return dict(dicts.patch_dict(copy.deepcopy(old), self._patch_body(request, res)))
        except jsonpatch.JsonPatchTestFailed as e:
            raise _status(422, "Invalid",
                          f"the server rejected our request due to an error in our request: {e}")
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, ValueError,
                TypeError) as e:
            raise _status(422, "Invalid",
                          f"the server rejected our request: {e}")  # the code is a guess

    async def _serve_update_request(self, request: rendering.Request, res: resource,
                                    info: ResourceInfo) -> aiohttp.web.StreamResponse:
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
            if _without(final, ignored) != _without(old, ignored):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
            final, unknown, errors = self._validate(res, {**final, "apiVersion": _gv(res)})
            if unknown and directive == "Strict":
                if request.method.value == "PUT":
                    raise self._decode_error(request.data, res, unknown)
                # a patch: jsonPatcher.applyPatchToCurrentObject in handlers/patch.go
                why = f'Invalid value: {json.dumps(json.dumps(new))}: {self._strict_error(unknown)}'
                raise _status(422, "Invalid", f' "" is invalid: patch: {why}',
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
            raise _status(422, "Invalid",
                          f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                          f'Unsupported value: "{policy}": supported values: "Foreground", '
                          '"Background", "Orphan"')
        if orphan is not None:
            if policy is not None:
                raise _status(422, "Invalid",
                              'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                              'Invalid value: "": orphanDependents and deletionPropagation cannot '
                              'be both set')
            policy = "Orphan" if orphan in (True, *_GO_TRUE) else "Background"
        return policy, body.get("preconditions") or {}

    async def _serve_delete_request(self, request: rendering.Request, res: resource) -> aiohttp.web.StreamResponse:
        policy, preconditions = self._delete_options(request)
        async with self._lock:
            stored = self._stored(res, request.namespace, request.name)
            for field in ("uid", "resourceVersion"):
                want, have = preconditions.get(field), stored["metadata"].get(field)
                if want and want != have:
                    label = "UID" if field == "uid" else "ResourceVersion"
                    raise _status(409, "Conflict",
                                  f"Operation cannot be fulfilled on {_qualified(res)} "
                                  f'"{request.name}": Precondition failed: {label} in '
                                  f'precondition: {want}, '
                                  f"{label} in object meta: {have}")
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
            policy = ("Orphan" if ORPHAN in current else "Foreground" if FOREGROUND in current else
                      "Orphan" if (store.group, store.version, store.plural) in ORPHAN_BY_DEFAULT else "Background")
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
            meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        return await self._commit(key, obj)

    # -------------------------------------------------------------------- garbage collector
    def _wake_collector(self) -> None:
        """Run the garbage collector soon, after the current request (it is a controller)."""
        self._gc_pending = True
        if self._gc_task is None or self._gc_task.done():
            self._gc_task = asyncio.get_running_loop().create_task(self._collect_garbage())

    async def garbage_collected(self) -> None:
        """Wait until the garbage collector has nothing left to do (for tests)."""
        while self._gc_task is not None and not self._gc_task.done():
            await asyncio.shield(self._gc_task)

    async def _collect_garbage(self) -> None:
        try:
            while self._gc_pending:
                self._gc_pending = False
                async with self._lock:
                    for _ in range(100_000):
                        if not await self._gc_step():
                            break
        except Exception as e:  # an emulator bug: surfaced in ``errors`` like a failed request
            if not self._errors:
                raise
            self._errors[-1].append(e)

    def _resolvable(self, ref: dict) -> bool:
        group, _, version = str(ref.get("apiVersion", "")).rpartition("/")
        return any(r.group == group and r.version == version and self.resources[r].kind == ref.get("kind")
                   for r in self.resources)

    async def _gc_step(self) -> bool:
        """One change of the garbage collector, if any is due (pkg/controller/garbagecollector/
        garbagecollector.go: orphanDependents, processDeletingDependentsItem, attemptToDeleteItem
        with classifyReferences). Owners are found by uid among the live objects."""
        alive = {key: o.raw for key, o in self._objects.items() if not o.deleted}
        by_uid = {raw["metadata"].get("uid"): (key, raw) for key, raw in alive.items()}
        dependents: dict[str, list[tuple[tuple, dict]]] = collections.defaultdict(list)
        for key, raw in alive.items():
            for ref in raw["metadata"].get("ownerReferences") or []:
                dependents[ref.get("uid")].append((key, ref))

        for key, raw in alive.items():  # owners being deleted with a GC finalizer
            meta = raw["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp"):
                continue
            if ORPHAN in finalizers:
                for dep_key, _ in dependents.get(meta["uid"], []):
                    dep = copy.deepcopy(self._objects[dep_key].raw)
                    refs = [r for r in dep["metadata"].pop("ownerReferences") if r.get("uid") != meta["uid"]]
                    if refs:  # an empty list is omitted (omitempty)
                        dep["metadata"]["ownerReferences"] = refs
                    await self._commit(dep_key, dep)
                await self._remove_finalizer(key, ORPHAN)
                return True
            if FOREGROUND in finalizers and not any(
                    ref.get("blockOwnerDeletion") for _, ref in dependents.get(meta["uid"], [])):
                await self._remove_finalizer(key, FOREGROUND)
                return True

        for key, raw in alive.items():  # dependents
            meta = raw["metadata"]
            refs = meta.get("ownerReferences") or []
            if not refs or meta.get("deletionTimestamp"):
                continue
            solid, gone = [], []
            waiting = False
            for ref in refs:
                hit = by_uid.get(ref.get("uid"))
                if hit is None:
                    (gone if self._resolvable(ref) else solid).append(ref)  # unresolvable: retried forever
                    continue
                (_, owner_ns, owner_name), owner = hit
                if owner.get("kind") != ref.get("kind") or owner_name != ref.get("name") or (
                        owner_ns is not None and owner_ns != key[1]):
                    gone.append(ref)
                elif owner["metadata"].get("deletionTimestamp") and FOREGROUND in (
                        owner["metadata"].get("finalizers") or []):
                    gone.append(ref)
                    waiting = True
                else:
                    solid.append(ref)
            if solid:
                if gone:  # drop the references to dangling or foreground-deleting owners
                    dep = copy.deepcopy(raw)
                    dep["metadata"]["ownerReferences"] = solid
                    await self._commit(key, dep)
                    return True
                continue
            own = meta.get("finalizers") or []
            policy = ("Foreground" if waiting and dependents.get(meta.get("uid")) else
                      "Orphan" if ORPHAN in own else "Foreground" if FOREGROUND in own else "Background")
            await self._delete(key, policy)
            return True
        return False

    async def _remove_finalizer(self, key: tuple, finalizer: str) -> None:
        obj = copy.deepcopy(self._objects[key].raw)
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not obj["metadata"]["finalizers"]:
            del obj["metadata"]["finalizers"]
        await self._commit(key, obj)

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
        in staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go)."""
        group["versions"] = sorted(group["versions"], key=lambda v: version_priority(v["version"]))
        group["preferredVersion"] = dict(group["versions"][0])
        return group

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        body = await super()._serve_version(request)
        body["groupVersion"] = _gv(request.resource)  # stock: "/v1" for the core group
        for entry in body["resources"]:
            if entry["name"].endswith(("/status", "/scale")):
                # the CRD discovery controller lists subresources with these verbs only
                entry.update(verbs=["get", "patch", "update"], shortNames=[], categories=[],
                             singularName="")
        return body

    def _openapi_documents(self) -> dict[str, dict]:
        """One OpenAPI v3 document per CRD group-version, keyed ``apis/<group>/<version>``
        (staging/src/k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder/builder.go,
        reduced to what clients read: paths with their GVK and parameters, and the schemas)."""
        if self._openapi is None:
            by_gv: dict[str, list[resource]] = collections.defaultdict(list)
            for res in self._schemas:
                by_gv[f"apis/{res.group}/{res.version}"].append(res)
            self._openapi = {gv: self._openapi_document(sorted(rs, key=lambda r: r.plural))
                             for gv, rs in by_gv.items()}
        return self._openapi

    def _openapi_document(self, resources: list[resource]) -> dict:
        schemas = copy.deepcopy(_META_SCHEMAS)
        paths: dict[str, dict] = {}
        for res in resources:
            info = self.resources[res]
            gvk = {"group": res.group, "version": res.version, "kind": info.kind}
            name = _schema_name(res.group, res.version, info.kind)
            schema = copy.deepcopy(self._schemas[res])
            schema.setdefault("properties", {})["metadata"] = {
                "allOf": [{"$ref": f"#/components/schemas/{_OBJECT_META}"}],
                "description": "Standard object's metadata."}
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[name] = schema
            schemas[name + "List"] = {"type": "object", "required": ["items"],
                                      "x-kubernetes-group-version-kind": [{**gvk,
                                                                           "kind": info.kind + "List"}],
                                      "properties": {"apiVersion": {"type": "string"},
                                                     "kind": {"type": "string"},
                                                     "items": {"type": "array",
                                                               "items": {"$ref": f"#/components/schemas/{name}"}},
                                                     "metadata": {"$ref": f"#/components/schemas/{_LIST_META}"}}}
            ref, list_ref = {"$ref": f"#/components/schemas/{name}"}, {"$ref": f"#/components/schemas/{name}List"}
            scope = [_param("namespace", "path")] if info.namespaced else []
            base = f"/apis/{res.group}/{res.version}" + ("/namespaces/{namespace}" if info.namespaced else "") \
                + f"/{res.plural}"
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
                paths[base + "/{name}/status"] = {k: item[k] for k in ("parameters", "get", "put",
                                                                       "patch")}
        return {"openapi": "3.0.0",
                "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
                "paths": paths, "components": {"schemas": schemas}}

    def _openapi_index(self) -> dict:
        """``/openapi/v3``: where each group-version's document is, with a content hash
        (staging/src/k8s.io/kube-openapi/pkg/handler3/handler.go)."""
        docs = self._openapi_documents()
        if "" not in docs:  # the index is cached with the documents, under ""
            docs[""] = {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=" + hashlib.sha512(
                json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()} for gv,
                doc in sorted(docs.items())}}
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
        yield EmulatorHandle(emulator=k, server=srv, url=str(srv.url).rstrip("/"),
                             namespace=namespace)


def write_kubeconfig(path: str | Path, url: str, namespace: str = "ns1",
                     token: str | None = None) -> Path:
    """Write a kubeconfig (context ``kmock``) pointing at the emulator; ``token`` (the user name,
    for :attr:`PatchedEmulator.authorizer`) or no credentials."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock", "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {"token": token} if token else {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock",
                                                   "namespace": namespace}}],
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
