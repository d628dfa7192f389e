"""What every test tier shares. The tiers are folders, each with its own conftest.py:

* ``unit/``      the spec, records, statistics, report, CLI and scripts (its ``slow`` tests
                 run the CLI against real local clusters);
* ``engine/``    real local Ray and Dask clusters: engines, workloads, faults, lifecycle, a
                 user's own Ray/Dask state beside ours;
* ``operator/``  the Kopf operator against the Kubernetes API emulator and the fake (or the
                 real dask-kubernetes) controllers, and ``kubectl`` against the emulator;
* ``chart/``     the Helm chart, its monitors and the Grafana dashboard against real scrapes;
* ``images/``    the container images, built and run in Docker; the image locks;
* ``cluster/``   the real single-node Kubernetes cluster (scripts/cluster.sh).

Helpers used by more than one test live in the package ``support/`` (one ``free_port``, one
record factory, the emulator, the fake controllers).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIERS = ("unit", "engine", "operator", "chart", "images", "cluster")

# Functions defined in test modules are pickled by reference: the worker processes the tests
# start (they inherit this environment) must be able to import the test modules (pytest
# imports tests/<tier>/test_x.py as ``test_x``) and the support package too.
_paths = [HERE, *(os.path.join(HERE, t) for t in TIERS)]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (*_paths, os.environ.get("PYTHONPATH", "")) if p)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def built_images():
    """The runner images and the operator image (tests/support/image_build.py), built once per
    session for every tier that runs them (images/test_images.py, cluster/test_real_cluster.py)."""
    from support.image_build import build_images

    return build_images()
