"""The Kubernetes API client, built the same way by the runner and the operator.

Imports the ``kubernetes`` package (the ``operator`` extra): import this module only where an
API call is made.
"""
from __future__ import annotations

import importlib.metadata
import os

from kubernetes import client, config

DISTRIBUTION = "raydask-testbed"  # pyproject.toml's [project] name


def version() -> str:
    """The installed testbed's version, for the User-Agent of its requests."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
        return "unknown"


RUNNER_USER_AGENT = f"testbed-runner/{version()}"  # the runner's own calls (channel.publish)


def api_client(host: str | None = None, user_agent: str | None = None) -> client.ApiClient:
    """In a pod: the service account; else ``$KUBECONFIG``/~/.kube/config; or an explicit host.
    ``user_agent``: who the requests say they come from (default: the client library's)."""
    if host:
        cfg = client.Configuration(host=host)
    else:
        cfg = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(client_configuration=cfg)
    api = client.ApiClient(cfg)
    if user_agent:
        api.user_agent = user_agent
    return api
