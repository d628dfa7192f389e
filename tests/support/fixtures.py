"""Fixtures more than one tier uses; a tier's conftest.py imports the ones it needs."""
import pytest


@pytest.fixture
async def cluster(tmp_path):
    """Kubernetes for the operator and chart tiers: the API emulator with every CRD, a
    namespace ``ns1``, a kubeconfig for it (for runner processes), and a plain HTTP client."""
    from support.k8s_emulator import serve_emulator, write_kubeconfig
    from support.operator_harness import Api

    async with serve_emulator("ns1") as k8s:
        api = Api(k8s.url, "ns1")
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", k8s.url, "ns1"))
        try:
            yield k8s, api, kubeconfig
        finally:
            await api.close()
