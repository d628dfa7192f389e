"""What the ``libraries`` tier's workloads share: importing each framework's own library with
a one-line error naming the package, and which framework family a run is on.

A library workload runs each framework's own library (Ray Data, Ray Train, Dask DataFrame,
``xgboost.dask``, ...), so unlike the ``core`` tier it has one code path per family:

* ``local``: the single-process library (pandas, xgboost, scikit-learn, torch);
* ``ray``: Ray's libraries on the Ray cluster;
* ``dask``: Dask's libraries: on a distributed cluster (``dask``), on a Ray cluster through
  Ray's scheduler (``dask-on-ray``) and on Dask's single-machine schedulers
  (``dask-threads``/``-processes``/``-synchronous``), always under ``engine.dask_context()``.
"""
from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any, Literal

from bench.errors import RunError
from bench.frameworks import cluster_kind, dask_scheduler, is_baseline

Family = Literal["local", "ray", "dask"]


def family(framework: str) -> Family:
    """Which code path of a library workload runs ``framework`` (see the module docstring)."""
    if is_baseline(framework):
        return "local"
    if framework == "ray":
        return "ray"
    if dask_scheduler(framework) is not None or framework == "dask-on-ray" \
            or cluster_kind(framework) == "dask":
        return "dask"
    raise RunError(f"no library workload runs on {framework!r}")


def require(module: str, package: str, workload: str) -> ModuleType:
    """``import module``, or fail with one line naming ``package`` (what to install)."""
    try:
        return import_module(module)
    except ImportError as e:
        raise RunError(f"{workload} needs the Python package {package!r}: {module} cannot be "
                       f"imported here ({type(e).__name__}: {e}); install the 'libraries' "
                       "extra (pip install 'testbed[libraries]')") from None


class Inbox:
    """A Ray actor (``num_cpus=0``) holding what rank 0 of a Ray Train run reports, for the
    driver to read.  Ray Train 2.x (Train V2) hands the driver only metrics reported with a
    checkpoint (ray/train/v2/api/result.py, ``Result._from_checkpoint_manager``), and a
    checkpoint needs a storage path every node shares (ray/train/v2/_internal/execution/
    storage.py, ``persist_current_checkpoint``): a RayJob's pods share none."""

    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None

    def put(self, value: dict[str, Any]) -> None:
        self.value = value

    def get(self) -> dict[str, Any] | None:
        return self.value
