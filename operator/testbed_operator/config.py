"""The operator's settings: one :class:`OperatorConfig`, built one way.

Every setting has a flag and an environment variable (the Helm chart sets those; see
:mod:`.main` for the table). :func:`build_parser` takes its defaults from the environment, so a
flag beats its variable, and :meth:`OperatorConfig.from_args` turns the parsed flags into the
config: :func:`config_from_env` (``kopf run -m testbed_operator.main``) is the same path with no
flags. Tests construct :class:`OperatorConfig` directly.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The KubeRay operator, wherever it runs (its Helm chart and its kustomize manifests both label
# the pod so): it polls the RayJob's status on the head's dashboard port.
KUBERAY_OPERATOR_PEER = {"namespaceSelector": {},
                         "podSelector": {"matchLabels": {"app.kubernetes.io/component":
                                                         "kuberay-operator"}}}
DEFAULT_LIVENESS = "http://127.0.0.1:8080/healthz"


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    default_image: str = "testbed-runner:latest"
    max_concurrent_trials: int = 1
    poll_seconds: float = 1.0
    run_grace_seconds: int = 120  # on top of timeoutSeconds x workloads (run_deadline_seconds)
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"
    # One NetworkPolicy per trial (manifests.build_networkpolicy_manifest). The peers are
    # NetworkPolicyPeer objects: who may scrape the metrics ports, who may reach the Ray
    # dashboard port.
    network_policy: bool = False
    network_policy_metrics_from: list[dict[str, Any]] = field(default_factory=list)
    network_policy_ray_dashboard_from: list[dict[str, Any]] = field(
        default_factory=lambda: [copy.deepcopy(KUBERAY_OPERATOR_PEER)])
    # Kopf's watch settings; tests shorten them.
    watch_server_timeout: float = 300
    error_backoffs: tuple[float, ...] = (1, 2, 5, 10, 20)
    # How often a waiting trial looks for pod-creation failures and stuck pods (events, pods).
    failure_check_seconds: float = 5.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OperatorConfig:
        """The config from :func:`build_parser`'s flags (whose defaults are the environment)."""
        return cls(namespaces=args.namespace or args.env_namespaces,
                   default_image=args.default_image,
                   max_concurrent_trials=args.max_concurrent_trials,
                   poll_seconds=args.poll_seconds,
                   metrics_port=args.metrics_port or None,
                   metrics_address=args.metrics_address,
                   network_policy=args.network_policy,
                   network_policy_metrics_from=args.network_policy_metrics_from,
                   network_policy_ray_dashboard_from=args.network_policy_ray_dashboard_from)


def config_from_env() -> OperatorConfig:
    """The config from the environment alone (no flags)."""
    return OperatorConfig.from_args(build_parser().parse_args([]))


def _fail(name: str, why: str) -> SystemExit:
    return SystemExit(f"testbed-operator: error: ${name}: {why}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _fail(name, f"expected an integer, got {raw!r}") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise _fail(name, f"expected true or false, got {raw!r}")


def parse_peers(text: str) -> list[dict[str, Any]]:
    """A JSON list of NetworkPolicyPeer objects (each a namespaceSelector, podSelector and/or
    ipBlock); raises ValueError naming what is wrong."""
    try:
        peers = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(peers, list):
        raise ValueError("expected a JSON list of NetworkPolicyPeer objects, got "
                         f"{type(peers).__name__}")
    for i, peer in enumerate(peers):
        if not isinstance(peer, dict) or not peer or set(peer) - {"namespaceSelector",
                                                                  "podSelector", "ipBlock"}:
            raise ValueError(f"item {i}: expected an object with namespaceSelector, podSelector "
                             f"or ipBlock, got {json.dumps(peer)}")
    return peers


def _env_peers(name: str, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse_peers(raw)
    except ValueError as e:
        raise _fail(name, str(e)) from None


def _peers_arg(text: str) -> list[dict[str, Any]]:
    try:
        return parse_peers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The operator's flags, each defaulting to its environment variable (checked here: a bad
    value exits naming the variable)."""
    defaults = OperatorConfig()
    p = argparse.ArgumentParser(prog="testbed-operator",
                                description="Reconcile Benchmark resources into KubeRay and "
                                            "Dask clusters, runner jobs, status and metrics.")
    p.add_argument("--namespace", "-n", action="append", default=None,
                   help="namespace to watch (repeat); default: $TESTBED_NAMESPACES or all")
    p.set_defaults(env_namespaces=[n.strip() for n in os.environ.get("TESTBED_NAMESPACES",
                                                                     "").split(",") if n.strip()])
    p.add_argument("--metrics-port", type=int, default=_env_int("TESTBED_METRICS_PORT", 9090),
                   help="Prometheus /metrics port (0 disables)")
    p.add_argument("--metrics-address",
                   default=os.environ.get("TESTBED_METRICS_ADDRESS", defaults.metrics_address))
    p.add_argument("--liveness", default=os.environ.get("TESTBED_LIVENESS", DEFAULT_LIVENESS),
                   help="Kopf liveness endpoint URL ('' disables)")
    p.add_argument("--default-image",
                   default=os.environ.get("TESTBED_DEFAULT_IMAGE", defaults.default_image),
                   help="runner image when a Benchmark names none")
    p.add_argument("--max-concurrent-trials", type=_positive,
                   default=_env_int("TESTBED_MAX_CONCURRENT_TRIALS",
                                    defaults.max_concurrent_trials))
    p.add_argument("--poll-seconds", type=float,
                   default=float(os.environ.get("TESTBED_POLL_SECONDS", "1")))
    p.add_argument("--network-policy", action=argparse.BooleanOptionalAction,
                   default=_env_bool("TESTBED_NETWORK_POLICY"),
                   help="one NetworkPolicy per trial: its pods accept traffic only from each other")
    p.add_argument("--network-policy-metrics-from", type=_peers_arg, metavar="JSON",
                   default=_env_peers("TESTBED_NETWORK_POLICY_METRICS_FROM",
                                      defaults.network_policy_metrics_from),
                   help="NetworkPolicyPeers (JSON list) allowed to the trial pods' metrics ports")
    p.add_argument("--network-policy-ray-dashboard-from", type=_peers_arg, metavar="JSON",
                   default=_env_peers("TESTBED_NETWORK_POLICY_RAY_DASHBOARD_FROM",
                                      defaults.network_policy_ray_dashboard_from),
                   help="NetworkPolicyPeers (JSON list) allowed to the Ray dashboard port "
                        "(default: the KubeRay operator, which reads RayJob status there)")
    p.add_argument("--verbose", "-v", action="store_true")
    return p


def load(argv: Sequence[str] | None = None) -> tuple[OperatorConfig, argparse.Namespace]:
    """The config and the parsed flags (``--liveness``, ``--verbose`` are not config)."""
    args = build_parser().parse_args(argv)
    return OperatorConfig.from_args(args), args
