"""Kubernetes resource quantities (``500m`` cores, ``2Gi`` bytes): parsing and formatting."""
from __future__ import annotations

import re

from .spec_errors import SpecError

_QUANTITY = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15, "e": 10**18,
             "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(q: str) -> int:
    """Bytes (or units) of a quantity: ``2Gi`` -> 2147483648, ``1k`` -> 1000."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTPE]i?|[kmgtpe])?", q)
    if not m:
        raise SpecError(f"{q!r} is not a quantity")
    return int(float(m.group(1)) * _QUANTITY[m.group(2) or ""])


def format_bytes(n: float) -> str:
    """``n`` bytes as a binary quantity: 2Gi, 1.5Ti, 512Mi."""
    for unit, size in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20),
                       ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + unit
    return f"{n:g}"


def cpu_cores(q: str) -> float:
    """Cores of a CPU quantity: ``500m`` -> 0.5, ``2`` -> 2.0."""
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)
