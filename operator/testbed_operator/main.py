"""Run the operator: ``testbed-operator`` (console script) or
``kopf run -m testbed_operator.main``.

Every flag has an environment variable (the Helm chart sets those; :mod:`.config` builds the
config from both, a flag beating its variable):

* ``--namespace`` (repeat), ``TESTBED_NAMESPACES`` (a,b): cluster-wide
* ``--metrics-port``, ``TESTBED_METRICS_PORT``: 9090 (0 disables)
* ``--metrics-address``, ``TESTBED_METRICS_ADDRESS``: 127.0.0.1 (0.0.0.0 in a pod)
* ``--liveness``, ``TESTBED_LIVENESS``: http://127.0.0.1:8080/healthz
* ``--default-image``, ``TESTBED_DEFAULT_IMAGE``: testbed-runner:latest
* ``--max-concurrent-trials``, ``TESTBED_MAX_CONCURRENT_TRIALS``: 1
* ``--poll-seconds``, ``TESTBED_POLL_SECONDS``: 1
* ``--network-policy``, ``TESTBED_NETWORK_POLICY`` (true/false): off
* ``--network-policy-metrics-from``, ``TESTBED_NETWORK_POLICY_METRICS_FROM``: ``[]`` (JSON)
* ``--network-policy-ray-dashboard-from``, ``TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM``:
  the KubeRay operator (JSON)

The two ``-from`` values are JSON lists of NetworkPolicyPeer objects (``namespaceSelector``,
``podSelector``, ``ipBlock``); see :func:`.manifests.build_networkpolicy_manifest`.

With ``kopf run -m testbed_operator.main`` the handlers are registered on Kopf's default
registry from the environment, and Kopf's own flags (``--namespace``, ``--liveness``,
``--standalone``) apply.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import kopf

from bench.kube.client import api_client

from . import config as _config
from .config import OperatorConfig, build_parser, config_from_env
from .handlers import register
from .kube import Kube
from .reconcile import BenchmarkOperator

__all__ = ["OperatorConfig", "build_parser", "config_from_env", "main", "run"]


async def run(op: BenchmarkOperator, *, liveness: str | None = None,
              login: kopf.ConnectionInfo | None = None, stop_flag: asyncio.Event | None = None,
              ready_flag: asyncio.Event | None = None) -> None:
    """Run ``op``'s handlers under Kopf until ``stop_flag`` (or a signal)."""
    config = op.config
    registry = kopf.OperatorRegistry()
    register(registry, config)
    if login is not None:
        @kopf.on.login(registry=registry)
        def _login(**_: object) -> kopf.ConnectionInfo:
            return login
    else:
        @kopf.on.login(registry=registry)
        def _login(**kw: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_with_service_account(**kw) or kopf.login_with_kubeconfig(**kw)
    server = None
    if config.metrics_port:
        server = op.metrics.serve(config.metrics_port, config.metrics_address)
    try:
        await kopf.operator(registry=registry, standalone=True,
                            clusterwide=not config.namespaces, namespaces=config.namespaces,
                            liveness_endpoint=liveness or None, memo=kopf.Memo(operator=op),
                            stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        if server is not None:
            server[0].shutdown()
            server[0].server_close()


def main(argv: Sequence[str] | None = None) -> int:
    config, args = _config.load(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        op = BenchmarkOperator(Kube(api_client()), config)
        asyncio.run(run(op, liveness=args.liveness))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # e.g. no kubeconfig and not in a pod
        print(f"testbed-operator: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _register_for_kopf_run() -> None:
    """``kopf run -m testbed_operator.main``: handlers on Kopf's default registry."""
    config = config_from_env()
    registry = kopf.get_default_registry()
    register(registry, config)

    @kopf.on.startup()
    async def _start(memo: kopf.Memo, **_: object) -> None:
        op = BenchmarkOperator(Kube(api_client()), config)
        memo.operator = op
        if config.metrics_port:
            op.metrics.serve(config.metrics_port, config.metrics_address)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
elif "kopf" in os.path.basename(sys.argv[0] if sys.argv else ""):
    _register_for_kopf_run()
