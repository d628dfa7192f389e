"""Run the operator: ``testbed-operator`` (console script) or ``kopf run -m testbed_operator.main``.

Every flag has an environment variable (the Helm chart sets those):

=======================================  =============================================  =============================
flag                                     environment                                    default
=======================================  =============================================  =============================
``--namespace`` (repeat)                 ``TESTBED_NAMESPACES`` (a,b)                   cluster-wide
``--metrics-port``                       ``TESTBED_METRICS_PORT``                       9090 (0 disables)
``--metrics-address``                    ``TESTBED_METRICS_ADDRESS``                    127.0.0.1 (0.0.0.0 in a pod)
``--liveness``                           ``TESTBED_LIVENESS``                           http://127.0.0.1:8080/healthz
``--default-image``                      ``TESTBED_DEFAULT_IMAGE``                      testbed-runner:latest
``--max-concurrent-trials``              ``TESTBED_MAX_CONCURRENT_TRIALS``              1
``--poll-seconds``                       ``TESTBED_POLL_SECONDS``                       1
``--network-policy``                     ``TESTBED_NETWORK_POLICY`` (true/false)        off
``--network-policy-metrics-from``        ``TESTBED_NETWORK_POLICY_METRICS_FROM``        ``[]`` (JSON)
``--network-policy-ray-dashboard-from``  ``TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM``  the KubeRay operator (JSON)
=======================================  =============================================  =============================

The two ``-from`` values are JSON lists of NetworkPolicyPeer objects (``namespaceSelector``,
``podSelector``, ``ipBlock``); see :func:`.manifests.build_networkpolicy_manifest`.

With ``kopf run -m testbed_operator.main`` the handlers are registered on Kopf's default
registry from the environment, and Kopf's own flags (``--namespace``, ``--liveness``,
``--standalone``) apply.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Sequence

import kopf

from bench.kube.client import api_client

from .handlers import BenchmarkOperator, OperatorConfig, register
from .kube import Kube


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"testbed-operator: error: ${name}: expected an integer, got {raw!r}")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise SystemExit(f"testbed-operator: error: ${name}: expected true or false, got {raw!r}")


def parse_peers(text: str) -> list[dict]:
    """A JSON list of NetworkPolicyPeer objects (each a namespaceSelector, podSelector and/or
    ipBlock); raises ValueError naming what is wrong."""
    try:
        peers = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(peers, list):
        raise ValueError(f"expected a JSON list of NetworkPolicyPeer objects, got {type(peers).__name__}")
    for i, peer in enumerate(peers):
        if not isinstance(peer, dict) or not peer or set(peer) - {"namespaceSelector", "podSelector",
                                                                  "ipBlock"}:
            raise ValueError(f"item {i}: expected an object with namespaceSelector, podSelector "
                             f"or ipBlock, got {json.dumps(peer)}")
    return peers


def _env_peers(name: str, default: list[dict]) -> list[dict]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse_peers(raw)
    except ValueError as e:
        raise SystemExit(f"testbed-operator: error: ${name}: {e}")


def _peers_arg(text: str) -> list[dict]:
    try:
        return parse_peers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_from_env() -> OperatorConfig:
    ns = [n.strip() for n in os.environ.get("TESTBED_NAMESPACES", "").split(",") if n.strip()]
    defaults = OperatorConfig()
    return OperatorConfig(
        namespaces=ns,
        default_image=os.environ.get("TESTBED_DEFAULT_IMAGE", OperatorConfig.default_image),
        max_concurrent_trials=_env_int("TESTBED_MAX_CONCURRENT_TRIALS", 1),
        poll_seconds=float(os.environ.get("TESTBED_POLL_SECONDS", "1")),
        metrics_port=_env_int("TESTBED_METRICS_PORT", 9090) or None,
        metrics_address=os.environ.get("TESTBED_METRICS_ADDRESS", "127.0.0.1"),
        network_policy=_env_bool("TESTBED_NETWORK_POLICY"),
        network_policy_metrics_from=_env_peers("TESTBED_NETWORK_POLICY_METRICS_FROM",
                                               defaults.network_policy_metrics_from),
        network_policy_ray_dashboard_from=_env_peers("TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM",
                                                 defaults.network_policy_ray_dashboard_from),
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    env = config_from_env()
    p = argparse.ArgumentParser(prog="testbed-operator",
                                description="Reconcile Benchmark resources into KubeRay and "
                                            "Dask clusters, runner jobs, status and metrics.")
    p.add_argument("--namespace", "-n", action="append", default=None,
                   help="namespace to watch (repeat); default: $TESTBED_NAMESPACES or all")
    p.add_argument("--metrics-port", type=int, default=env.metrics_port or 0,
                   help="Prometheus /metrics port (0 disables)")
    p.add_argument("--metrics-address", default=env.metrics_address)
    p.add_argument("--liveness", default=os.environ.get("TESTBED_LIVENESS",
                                                        "http://127.0.0.1:8080/healthz"),
                   help="Kopf liveness endpoint URL ('' disables)")
    p.add_argument("--default-image", default=env.default_image,
                   help="runner image when a Benchmark names none")
    p.add_argument("--max-concurrent-trials", type=_positive, default=env.max_concurrent_trials)
    p.add_argument("--poll-seconds", type=float, default=env.poll_seconds)
    p.add_argument("--network-policy", action=argparse.BooleanOptionalAction,
                   default=env.network_policy,
                   help="one NetworkPolicy per trial: its pods accept traffic only from each other")
    p.add_argument("--network-policy-metrics-from", type=_peers_arg, metavar="JSON",
                   default=env.network_policy_metrics_from,
                   help="NetworkPolicyPeers (JSON list) allowed to the trial pods' metrics ports")
    p.add_argument("--network-policy-ray-dashboard-from", type=_peers_arg, metavar="JSON",
                   default=env.network_policy_ray_dashboard_from,
                   help="NetworkPolicyPeers (JSON list) allowed to the Ray dashboard port "
                        "(default: the KubeRay operator, which reads RayJob status there)")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


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
        def _login(**kw: object) -> kopf.ConnectionInfo | None:
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_env()
    config.namespaces = args.namespace or config.namespaces
    config.metrics_port = args.metrics_port or None
    config.metrics_address = args.metrics_address
    config.default_image = args.default_image
    config.max_concurrent_trials = args.max_concurrent_trials
    config.poll_seconds = args.poll_seconds
    config.network_policy = args.network_policy
    config.network_policy_metrics_from = args.network_policy_metrics_from
    config.network_policy_ray_dashboard_from = args.network_policy_ray_dashboard_from
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
