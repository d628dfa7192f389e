"""The real-cluster tier: a single-node Kubernetes built from its Go modules
(scripts/cluster.sh) with KubeRay, the dask-kubernetes controller and Prometheus; Benchmarks
applied with kubectl, end to end."""
