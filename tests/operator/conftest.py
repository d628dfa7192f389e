"""The operator tier: the Kopf operator against the in-process Kubernetes API emulator
(support/k8s_emulator) with the fake KubeRay/Dask/kubelet controllers (support/fake_controllers),
or the real dask-kubernetes controller (support/real_dask_operator); kubectl against the
emulator."""
from support.fixtures import cluster

__all__ = ["cluster"]
