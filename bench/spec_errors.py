"""How a spec that cannot be run is reported: :class:`SpecError` and one line per
validation error, naming the field path and, for a typo, the closest allowed name."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import did_you_mean


class SpecError(ValueError):
    """A spec that cannot be run; the message names the field and what was expected."""


def _unwrap(tp: Any) -> Any:
    """``X`` from ``X | None`` and ``Annotated[X, ...]``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else tp
    return tp


def _model_holding(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field ``loc[-1]`` is, following ``loc`` from ``model`` (None when the
    path leads elsewhere, e.g. into a workload's free-form params)."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = typing.get_args(tp)[0]
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return None
        field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        tp = field.annotation
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    """The names a user writes in YAML: camelCase aliases, and those a model accepts besides
    its fields (its ``extra_yaml_fields``, e.g. the spec's ``workload``)."""
    names = [f.alias or n for n, f in model.model_fields.items()]
    return names + list(getattr(model, "extra_yaml_fields", ()))


def format_validation_error(err: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per error: ``<prefix>.<field path>: <what was expected>``.  ``model`` is the
    model validated, used to suggest a field name for a typo."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            if not msg.startswith("unknown field"):  # workload params come with their hint
                holder = _model_holding(model, tuple(e["loc"]))
                msg = "unknown field" + (did_you_mean(e["loc"][-1], _field_names(holder))
                                         if holder else "")
        elif e["type"] == "unused_field":
            pass  # the message says it all; the value is in it
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif "input" in e and e["type"] not in ("value_error",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{prefix}.{loc}: {msg}")
    return "\n".join(lines)
