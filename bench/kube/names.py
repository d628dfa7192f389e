"""The names the runner and the operator share, in one place.

The operator renders them into the trial's objects (``testbed_operator.manifests``) and reads
them back (``testbed_operator.handlers``); the runner reads the environment variables and writes
the result ConfigMap (:mod:`bench.kube.channel`, :mod:`bench.kube.faults`).  Changing any of
them changes the contract between an operator and the runner images it starts.
"""
from __future__ import annotations

import hashlib
import re

GROUP = "testbed.dev"  # the Benchmark CRD's API group (testbed_operator.crd uses it)

# -- environment variables the operator sets on the runner ----------------------------------
RESULT_OWNER_ENV = "TESTBED_RESULT_OWNER"
"""The Benchmark's owner reference (JSON), put on the result ConfigMap (:mod:`.channel`)."""
FAULT_PODS_ENV = "TESTBED_FAULT_PODS"
"""Which pods the runner of a faulted trial may delete (JSON, see :mod:`.faults`)."""
STARTUP_TIMEOUT_ENV = "TESTBED_STARTUP_TIMEOUT_SECONDS"
"""How long the runner may wait for its cluster (seconds): the runner command reads it and
passes it to the engine as ``connect_timeout`` (the engines do not import this package)."""
WORKER_CONTAINER_ENV = "TESTBED_WORKER_CONTAINER"
"""``1`` on the containers of the worker pods (a Ray worker node, a Dask worker): each holds one
worker, so its samplers also read the container's memory cgroup. bench.measure reads it under
the same name (it does not import this package; tests/unit pins the two equal)."""

# -- the result ConfigMap ---------------------------------------------------------------------
RESULT_DATA_KEY = "records.json"
"""The ConfigMap key holding the runner's payload (JSON)."""

# -- label keys -------------------------------------------------------------------------------
APP_NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "testbed-operator"
BENCHMARK_LABEL = f"{GROUP}/benchmark"
FRAMEWORK_LABEL = f"{GROUP}/framework"
WORKERS_LABEL = f"{GROUP}/workers"
TRIAL_LABEL = f"{GROUP}/trial"
"""The trial's name: selects every pod of the trial (its NetworkPolicy, its fault targets)."""
RESULT_LABEL = f"{GROUP}/result"
"""``"true"`` on result ConfigMaps."""

# -- the runner's identity --------------------------------------------------------------------
RUNNER_ACCOUNT = "testbed-runner"
"""The runner's service account (the chart creates it, and its Role, per runner namespace)."""
RUNNER_FIELD_MANAGER = "testbed-runner"
"""The field manager of the runner's writes (its result ConfigMap)."""


# -- object names -----------------------------------------------------------------------------
def trial_name(benchmark: str, framework: str, workers: int) -> str:
    """A DNS-1035 label unique per trial (≤ 40 chars: KubeRay/Dask append suffixes).

    The trial's RayJob, RayCluster, DaskCluster and NetworkPolicy carry this name."""
    base = re.sub(r"[^a-z0-9-]", "-", f"{benchmark}-{framework}-{workers}".lower()).strip("-")
    if len(base) <= 40 and base[0].isalpha():
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    head = re.sub(r"^[^a-z]+", "", base)[:30].strip("-") or "bm"
    return f"{head}-{digest}"


def runner_job_name(trial: str) -> str:
    """The batch/v1 Job running ``testbed runner`` for a Dask trial."""
    return f"{trial}-runner"


def result_configmap_name(trial: str) -> str:
    """The trial's result ConfigMap (:mod:`.channel`)."""
    return f"{trial}-result"


def label_value(name: str) -> str:
    """A Benchmark name as a label value (at most 63 characters, alphanumeric at both ends)."""
    return name[:63].rstrip("-.")
