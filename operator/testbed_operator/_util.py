"""Small helpers the operator's modules share: timestamps and one-line error summaries."""
from __future__ import annotations

import json
from datetime import datetime


def ts(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (``...Z``), or None."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def short(e: BaseException) -> str:
    """One line about an error: an API error's status and message, else type and first line."""
    body = getattr(e, "body", None)
    if body:
        try:
            return f"{getattr(e, 'status', '')} {json.loads(body).get('message', body)}"[:400]
        except (ValueError, AttributeError):
            pass
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
