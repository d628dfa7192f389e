"""What the ``libraries`` tier's workloads share: importing each framework's own library with
a one-line error naming the package (:func:`require`), which framework family a run is on
(:func:`family`), the ray/dask dispatch of the workloads that run on exactly those two clusters
(:func:`dispatch`), the Dask client (:func:`dask_client`) and a scratch folder for Ray's
trainers (:func:`scratch_dir`) and the actor rank 0 of a Ray Train run reports through
(:class:`Inbox`).

A library workload runs each framework's own library (Ray Data, Ray Train, Dask DataFrame,
``xgboost.dask``, ...), so unlike the ``core`` tier it has one code path per family:

* ``local``: the single-process library (pandas, xgboost, scikit-learn, torch);
* ``ray``: Ray's libraries on the Ray cluster;
* ``dask``: Dask's libraries: on a distributed cluster (``dask``), on a Ray cluster through
  Ray's scheduler (``dask-on-ray``) and on Dask's single-machine schedulers
  (``dask-threads``/``-processes``/``-synchronous``), always under ``engine.dask_context()``.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from types import ModuleType
from typing import Any, Literal

from bench.engines.base import Engine
from bench.errors import RunError
from bench.frameworks import cluster_kind, dask_scheduler, is_baseline
from bench.workloads.base import Outcome, Params, State

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


Runner = Callable[[Engine, State, Params], Outcome]


def dispatch(workload: str, engine: Engine, state: State, params: Params,
             ray: tuple[str, Runner], dask: tuple[str, Runner]) -> Outcome:
    """Run a workload's ``ray`` or ``dask`` runner (``(library, runner)``) on its framework;
    any other framework is one line naming what runs where."""
    runners = {"ray": ray, "dask": dask}
    if engine.framework in runners:
        return runners[engine.framework][1](engine, state, params)
    raise RunError(f"{workload} runs on local, ray ({ray[0]}) and dask ({dask[0]}), "
                   f"not on {engine.framework}")


def dask_client(engine: Engine, what: str) -> Any:
    """The Dask engine's ``distributed.Client``, or one line: ``<what>: ... not connected``."""
    client = getattr(engine, "client", None)
    if client is None:
        raise RunError(f"{what}: the Dask engine is not connected")
    return client


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A temporary folder (a Ray Train/Tune run's ``storage_path``), removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
