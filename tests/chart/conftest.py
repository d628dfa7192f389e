"""The chart tier: the Helm chart rendered by Helm's Go SDK, its RBAC against the operator's
real API calls (on the emulator), its Prometheus monitors, and the Grafana dashboard's queries
against real Ray, Dask and operator scrapes."""
from support.fixtures import cluster

__all__ = ["cluster"]
