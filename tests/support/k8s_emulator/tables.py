"""meta.k8s.io Tables, as ``kubectl get`` asks for them: printer columns (a JSONPath subset),
cells, ages, and content negotiation of ``Accept``."""
from __future__ import annotations

import datetime
import json
import operator
import re
from collections.abc import Callable
from typing import Any

from kmock._internal import rendering  # private: kmock==0.8 is pinned

from .apimachinery import header, status_error

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
DEFAULT_CRD_COLUMNS = [{"name": "Age", "type": "date", "description": _CREATED_DOC,
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


_JSONPATH_STEP = re.compile(
    r"""\.(?P<field>[^.\[\]]+) | \[(?P<bracket>(?:'[^']*'|"[^"]*"|[^\]])*)\]""", re.X)
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
        key = m["field"]
        inner = (m["bracket"] or "").strip() if key is None else None
        if key is None and inner and inner[0] in "'\"":
            key = _literal(inner)
        nodes = _field(nodes, key) if key is not None else _bracket(nodes, inner or "", path)
    return nodes


def _children(n: Any) -> list[Any]:
    """``*`` of one node: a map's values or a list's items."""
    return list(n.values()) if isinstance(n, dict) else list(n) if isinstance(n, list) else []


def _field(nodes: list[Any], key: Any) -> list[Any]:
    """``.key`` or ``['key']`` (``*`` is every child)."""
    out: list[Any] = []
    for n in nodes:
        if key == "*" and isinstance(n, (dict, list)):
            out += _children(n)
        elif isinstance(n, dict) and key in n:
            out.append(n[key])
    return out


def _bracket(nodes: list[Any], inner: str, path: str) -> list[Any]:
    """``[*]``, ``[i]``, ``[a:b]`` or ``[?(filter)]``."""
    if inner == "*":
        return [c for n in nodes for c in _children(n)]
    if re.fullmatch(r"-?\d+", inner):
        i = int(inner)
        return [n[i] for n in nodes if isinstance(n, list) and -len(n) <= i < len(n)]
    if re.fullmatch(r"-?\d*:-?\d*", inner):
        a, b = inner.split(":")
        return [x for n in nodes if isinstance(n, list)
                for x in n[int(a) if a else None:int(b) if b else None]]
    f = _FILTER.fullmatch(inner)
    if f is None:
        raise ValueError(f"unrecognized JSONPath {path!r}: [{inner}]")
    keys = [k for k in f[1].split(".") if k]
    sub = "".join(f".{k}" for k in keys)
    return [item for n in nodes for item in (n if isinstance(n, list) else [])
            if _matches(jsonpath_find(item, sub) if keys else [item], f[2], f[3])]


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
    "<=": operator.le, ">=": operator.ge}


def _matches(found: list[Any], op: str | None, literal: str | None) -> bool:
    """A filter's test of one item: ``@.a`` exists, or ``@.a <op> literal`` holds (values that
    cannot be compared do not match)."""
    if op is None:
        return bool(found)
    if not found:
        return False
    try:
        return bool(_COMPARE[op](found[0], _literal(literal or "")))
    except TypeError:
        return False


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


def table_version(request: rendering.Request) -> str | None:
    """The first acceptable media type of ``Accept``: ``None`` for plain JSON, or the
    meta.k8s.io version of a Table (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
    negotiation/negotiate.go). Only JSON is offered: anything else alone is 406."""
    accept = header(request, "Accept").strip()
    if not accept:
        return None
    for clause in accept.split(","):
        media, *params = [p.strip() for p in clause.split(";")]
        opts = dict(p.split("=", 1) for p in params if "=" in p)
        if media not in ("application/json", "application/*", "*/*"):
            continue
        if "as" not in opts:
            return None
        if opts["as"] == "Table" and opts.get("g") == "meta.k8s.io" and opts.get("v") in (
                "v1", "v1beta1"):
            # handlers/response.go asTable
            if request.params.get("includeObject", "") not in TABLE_INCLUDE:
                raise status_error(400, "BadRequest",
                                   'unrecognized includeObject value: '
                                   f'"{request.params["includeObject"]}"')
            return opts["v"]
    raise status_error(406, "NotAcceptable",
                       "only the following media types are accepted: application/json, "
                       "application/json;as=Table;v=v1;g=meta.k8s.io")

def table(request: rendering.Request, objs: list[dict], rv: str, version: str,
          columns: list[dict] | None, headers: bool = True) -> dict:
    """A meta.k8s.io Table of ``objs`` (presented in the requested version): asTable in
    staging/src/k8s.io/apiserver/pkg/endpoints/handlers/response.go, with the CRD convertor
    (tableconvertor.go, see :func:`_cell`) or, for other kinds, the default one
    (staging/src/k8s.io/apiserver/pkg/registry/rest/table.go: Name, Created At)."""
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
