"""Numbers and labels as the report shows them, the same in every output format."""
from __future__ import annotations

from typing import Any

from bench.frameworks import is_baseline

MISSING = "—"
"""What a cell shows when there is no value (not run, not measured)."""


def _decimals(v: float) -> int:
    v = abs(v)
    if v >= 100:
        return 1
    if v >= 10:
        return 2
    return 3


def fmt_seconds(v: float | None, decimals: int | None = None) -> str:
    if v is None:
        return MISSING
    return f"{v:.{_decimals(v) if decimals is None else decimals}f}"


def fmt_median_iqr(median: float | None, iqr: float | None) -> str:
    """``"0.123 ±0.004"``: the IQR with as many decimals as the median."""
    if median is None:
        return MISSING
    d = _decimals(median)
    text = fmt_seconds(median, d)
    if iqr is not None:
        text += f" ±{iqr:.{d}f}"
    return text


def fmt_ratio(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2f}×"


def fmt_efficiency(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2f}"


def fmt_change(v: float | None) -> str:
    return MISSING if v is None else f"{v * 100:+.1f}%"


def fmt_number(v: Any) -> str:
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_signed_seconds(v: float | None) -> str:
    """``"+1.234"`` / ``"−0.500"`` (a true minus sign), or — without a value."""
    return MISSING if v is None else ("+" if v >= 0 else "−") + fmt_seconds(abs(v))


def shorten(v: Any, limit: int = 80) -> str:
    """A value (or the items of a list) as text of at most ``limit`` characters."""
    text = ", ".join(fmt_number(x) for x in v) if isinstance(v, (list, tuple)) else fmt_number(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_label(framework: str, workers: int) -> str:
    """``"ray ×2"``; the local baseline counts threads: ``"local 4t"``."""
    return f"{framework} {workers}t" if is_baseline(framework) else f"{framework} ×{workers}"


FLAG = "⚠"
"""The marker of a flagged (noisy or busy-machine) trial in the tables."""


def fmt_percent(v: float | None) -> str:
    """A relative difference in percent with two significant digits: ``"-0.0036%"``,
    ``"+5.0%"``; 0 is ``"0%"``."""
    if v is None:
        return MISSING
    pct = v * 100
    if pct == 0:
        return "0%"
    return f"{pct:+.2g}%" if abs(pct) < 1 else f"{pct:+.1f}%"


def fmt_amount(v: float | None) -> str:
    """A cost figure (core-seconds, GB-seconds, money) with 3 significant digits."""
    if v is None:
        return MISSING
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
