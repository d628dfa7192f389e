"""Events on a Benchmark, posted through Kopf's poster."""
from __future__ import annotations

import contextlib
from typing import Any

import kopf

from .crd import GROUP, VERSION


def _ref(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": body.get("kind", "Benchmark"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if k in meta}}


def kopf_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the Benchmark through Kopf's poster (``kopf.event``: it sets
    ``reportingComponent`` from ``settings.posting``), or nothing outside Kopf's context."""
    # No operator context (LookupError): the handlers driven directly, e.g. in a test.
    with contextlib.suppress(LookupError):
        # kopf.event reads only apiVersion, kind and metadata of the body it is given.
        kopf.event(_ref(body), type=type_, reason=reason,  # type: ignore[arg-type]
                   message=message[:1024])
