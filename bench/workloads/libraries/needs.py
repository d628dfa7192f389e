"""A library workload's packages: a missing one is one line naming it, not a traceback."""
from __future__ import annotations

from importlib import import_module
from types import ModuleType

from bench.errors import RunError


def need(module: str, package: str, what: str) -> ModuleType:
    """Import ``module`` or fail with ``<what> needs <package> (...)``."""
    try:
        return import_module(module)
    except ImportError as e:
        raise RunError(f"{what} needs {package} (cannot import {module}: {e}); install the "
                       "'libraries' extra or use the full runner image") from None
