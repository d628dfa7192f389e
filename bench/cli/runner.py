"""``testbed runner``: the in-pod entry point. Connects to an existing cluster, runs one
framework × workers, and emits the records as JSON (stdout, a file, and optionally the
operator's result channel)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.errors import RunError, TestbedError, UsageError, did_you_mean
from bench.frameworks import BASELINE, FRAMEWORKS, in_process, is_baseline, is_framework

from .options import Parser, positive_int
from .spec_args import SPEC_FLAGS, spec_from_args

if TYPE_CHECKING:
    from bench.spec import BenchmarkSpec

Send = Callable[[dict[str, Any]], None]


class _PublishedRunError(RunError):
    """A run failure already sent through the result channel: nothing more to publish."""


def register(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    rn = sub.add_parser("runner", parents=[common],
                        help="in-pod entry point: run one trial against a cluster")
    rn.add_argument("--framework", required=True)
    rn.add_argument("--workers", type=positive_int, required=True)
    rn.add_argument("--address", help="Ray GCS host:port or Dask scheduler tcp://host:port")
    g = rn.add_mutually_exclusive_group()
    g.add_argument("--spec", help="spec YAML file")
    g.add_argument("--spec-json", help="spec as JSON text")
    rn.add_argument("--out", "-o",
                    help="results file (JSON Lines); '-' or omitted: JSON on stdout")
    rn.add_argument("--result-configmap", metavar="NAMESPACE/NAME",
                    help="also publish the results to this ConfigMap (the operator's result "
                         "channel; uses the pod's service account or $KUBECONFIG)")
    rn.set_defaults(fn=cmd_runner)


def cmd_runner(args: argparse.Namespace) -> int:
    """In-pod entry point: connect to a cluster, run one framework × workers, emit JSON."""
    if not args.result_configmap:
        return _run_runner(args, None)
    # The result channel (bench.kube.channel): imported only here, so the
    # engine itself carries no Kubernetes dependency.
    try:
        from bench.kube.channel import parse_target, publish
    except ImportError as e:
        raise UsageError(f"--result-configmap needs the operator extra "
                         f"(pip install 'raydask-testbed[operator]'): {e}") from None
    try:
        parse_target(args.result_configmap)
    except ValueError as e:
        raise UsageError(str(e)) from None

    def send(payload: dict[str, Any]) -> None:
        try:
            publish(args.result_configmap, payload)
        except Exception as e:  # the API is unreachable or the service account lacks rights
            raise _PublishedRunError(  # nothing more to try
                f"--result-configmap {args.result_configmap}: cannot publish the "
                f"results: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None

    try:
        return _run_runner(args, send)
    except TestbedError as e:
        if not isinstance(e, _PublishedRunError):
            send({"error": str(e), "records": []})
        raise


def _runner_spec(args: argparse.Namespace) -> BenchmarkSpec:
    """The spec from --spec-json, or from --spec (or the defaults) without baselines."""
    from bench.spec import SpecError, loads_json_unique, parse_spec

    if not args.spec_json:
        ns = argparse.Namespace(**dict.fromkeys(SPEC_FLAGS))
        ns.spec, ns.no_baselines = args.spec, True
        return spec_from_args(ns)
    try:
        data = loads_json_unique(args.spec_json)
    except json.JSONDecodeError as e:
        raise UsageError(f"--spec-json is not valid JSON: {e.msg} at position {e.pos}") from None
    except ValueError as e:  # a key given twice
        raise UsageError(f"--spec-json: {e}") from None
    try:
        return parse_spec(data, source="spec")
    except SpecError as e:
        raise UsageError(str(e)) from None


def _run_runner(args: argparse.Namespace, send: Send | None) -> int:
    from bench.kube.faults import victim_source
    from bench.kube.names import STARTUP_TIMEOUT_ENV
    from bench.runner import run_benchmark

    spec = _runner_spec(args)
    if not is_framework(args.framework):
        names = (*(f for f in FRAMEWORKS if not is_baseline(f)), BASELINE)
        raise UsageError(f"--framework: unknown framework {args.framework!r}; expected "
                         f"{', '.join(names[:-1])} or {names[-1]}"
                         + did_you_mean(args.framework, names))
    if not in_process(args.framework) and not args.address:
        raise UsageError("--address: the runner connects to an existing cluster; give its address "
                         "(Ray GCS host:port, Dask scheduler tcp://host:port)")
    to_stdout = args.out in (None, "-")
    out = args.out if not to_stdout else os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"testbed-runner-{os.getpid()}.jsonl")
    if spec.artifacts and to_stdout:
        # The records travel as JSON (stdout, the ConfigMap); files beside a temporary results
        # file would be lost with the pod.
        print("artifacts: skipped, the runner has no results folder (give --out FILE to keep "
              "them beside it)", file=sys.stderr, flush=True)
    result = run_benchmark(spec, out, address=args.address,
                           trials=[(args.framework, args.workers)],
                           on_status=lambda m: print(m, file=sys.stderr, flush=True),
                           victims=victim_source(),
                           connect_timeout=_env_seconds(STARTUP_TIMEOUT_ENV),
                           artifacts=spec.artifacts and not to_stdout)
    payload = {"run_id": result.run_id, "records": result.records}
    if send is not None:
        send(payload)
    if to_stdout:
        print(json.dumps(payload, default=str))
        with contextlib.suppress(OSError):
            os.unlink(out)
    if result.failed:
        error = _PublishedRunError if send is not None else RunError
        raise error(f"{len(result.failed)} of {len(result.records)} trials failed: "
                    f"{result.failed[0]['error']}")
    return 0


def _env_seconds(name: str) -> float | None:
    """A positive number of seconds from ``$name`` (the operator sets it on runner pods), or
    None when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"${name}: expected a positive number of seconds, got {raw!r}")
    return seconds
