import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# Functions defined in test modules are pickled by reference: the worker processes the tests
# start (they inherit this environment) must be able to import the test modules too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
async def cluster(tmp_path):
    """The operator tier's Kubernetes: the API emulator with every CRD, a namespace ``ns1``,
    a kubeconfig for it (for runner processes), and a plain HTTP client."""
    from k8s_emulator import serve_emulator, write_kubeconfig
    from operator_harness import Api

    async with serve_emulator("ns1") as k8s:
        api = Api(k8s.url, "ns1")
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", k8s.url, "ns1"))
        try:
            yield k8s, api, kubeconfig
        finally:
            await api.close()


@pytest.fixture(scope="session")
def built_images():
    """The slim runner and the operator image (tests/image_build.py), built once per session
    for every tier that runs them (tests/test_images.py, tests/test_real_cluster.py)."""
    from image_build import build_images

    return build_images()
