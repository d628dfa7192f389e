"""``testbed``: run benchmarks, report and compare results, and the in-pod runner.

Exit status: 0 success, 1 a run failure (some trial failed, unreachable cluster, timeout),
2 a usage error (bad spec or flag, missing file).  No traceback unless ``--debug``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import RunError, TestbedError, UsageError, did_you_mean


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 with usage; keep that, shorter
        # "invalid choice: 'rnu' (choose from 'run', ...)": add the closest choice.
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:
            message += did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
        self.print_usage(sys.stderr)
        self.exit(2, f"testbed: error: {message}\n")


class _VersionAction(argparse.Action):
    """``--version``: the testbed's version and the frameworks' (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(version_line())
        parser.exit(0)


def version_line() -> str:
    """``testbed 0.1.0 (ray 2.60.0, dask 2026.8.0)`` from the installed distributions."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"testbed {v('raydask-testbed')} (ray {v('ray')}, dask {v('dask')})"


def _csv(kind: str):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{kind}: expected a comma-separated list, got {text!r}")
        return items
    return parse


def _int_list(text: str) -> list[int]:
    out = []
    for t in text.split(","):
        t = t.strip()
        try:
            v = int(t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4; got {t!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"worker counts must be positive; got {v}")
        out.append(v)
    return out


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}, got {v}" if low else f"must be 0 or more, got {v}")
        return v
    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", help="Benchmark spec (YAML); defaults apply when omitted")
    p.add_argument("--framework", "-f", type=_csv("--framework"), action="extend",
                   help="ray, dask, dask-on-ray, local (comma-separated or repeated)")
    p.add_argument("--workers", "-w", type=_int_list, help="worker counts to sweep, e.g. 1,2,4")
    p.add_argument("--workload", "-l", type=_csv("--workload"), action="extend",
                   help="knn, kmeans, pca, gridsearch, classify, cnn, resnet18, dataframe, tasks, noop")
    p.add_argument("--dataset", help="digits, synthetic, file, s3")
    p.add_argument("--samples", type=_positive_int, help="synthetic dataset rows")
    p.add_argument("--features", type=_positive_int, help="synthetic dataset columns")
    p.add_argument("--path", help="dataset file (.csv, .parquet, .npz)")
    p.add_argument("--uri", help="dataset S3 object, s3://bucket/key")
    p.add_argument("--endpoint-url", help="S3 endpoint (MinIO, Ceph, ...)")
    p.add_argument("--repeats", type=_positive_int, help="timed repetitions per trial")
    p.add_argument("--warmup", type=_nonneg_int, help="untimed runs before the timed ones")
    p.add_argument("--timeout", type=_positive_int, help="seconds per trial")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the local 1-thread/all-cores baselines")


# Dataset flags and the spec field each sets (bench.spec.DATASET_FIELDS says which datasets
# read it).
_DATASET_FLAGS = (("samples", "--samples", "samples"), ("features", "--features", "features"),
                  ("path", "--path", "path"), ("uri", "--uri", "uri"),
                  ("endpoint_url", "--endpoint-url", "endpoint_url"))


def _spec_from_args(args: argparse.Namespace):
    from pydantic.alias_generators import to_camel

    from .spec import DATASET_FIELDS, SpecError, load_spec, parse_spec

    try:
        spec = load_spec(args.spec)
        dataset = args.dataset or spec.dataset.name
        for attr, flag, field in _DATASET_FLAGS:
            if getattr(args, attr, None) is None or dataset not in DATASET_FIELDS:
                continue  # an unknown --dataset is reported by the model, naming the choices
            if field not in DATASET_FIELDS[dataset]:
                user = next(n for n, fields in DATASET_FIELDS.items() if field in fields)
                raise UsageError(f"{flag}: only the {user} dataset reads it, and the dataset is "
                                 f"{dataset!r}; add --dataset {user}")
        data = spec.model_dump(by_alias=True, exclude_none=True)
        if args.framework:
            data["frameworks"] = args.framework
        if args.workers:
            data["workers"] = args.workers
        if args.workload:
            data["workloads"] = [{"name": n} for n in args.workload]
        ds = data["dataset"]
        for flag, key in (("dataset", "name"), ("samples", "samples"), ("features", "features"),
                          ("path", "path"), ("uri", "uri"), ("endpoint_url", "endpointUrl")):
            v = getattr(args, flag, None)
            if v is not None:
                ds[key] = v
        if args.dataset and args.dataset != spec.dataset.name:
            # Another dataset than the spec's: drop the spec's fields for its own dataset.
            keep = {"name", "seed", "testSize"} | {to_camel(f) for f in DATASET_FIELDS.get(
                args.dataset, ())}
            for key in [k for k in ds if k not in keep]:
                ds.pop(key)
        for flag, key in (("repeats", "repeats"), ("warmup", "warmup"), ("timeout", "timeoutSeconds")):
            v = getattr(args, flag, None)
            if v is not None:
                data[key] = v
        if getattr(args, "no_baselines", False):
            data["baselines"] = False
        return parse_spec(data, source="spec" if not args.spec else Path(args.spec).name)
    except SpecError as e:
        raise UsageError(str(e)) from None


def _console():
    """A rich console; when output is not a terminal (CI logs, pipes) use a wide fixed width."""
    import shutil

    from rich.console import Console

    c = Console(highlight=False)
    if not c.is_terminal:
        c = Console(highlight=False, width=max(140, shutil.get_terminal_size((140, 40)).columns))
    return c


def cmd_run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .report import render_table, write_report
    from .results import summarize
    from .runner import new_run_id, run_benchmark

    spec = _spec_from_args(args)
    _check_fits_machine(spec, args.spec)
    console = _console()
    from .lifecycle import remove_leftovers

    for left in remove_leftovers():
        print(f"testbed: removed {len(left.processes)} process(es) left by an earlier testbed run "
              f"(pid {left.owner_pid}, gone): {', '.join(left.processes[:6])}"
              f"{' ...' if len(left.processes) > 6 else ''}", file=sys.stderr, flush=True)
    run_id = new_run_id()
    out = args.out or os.path.join("results", f"{spec.name}-{run_id}.jsonl")
    trials = spec.trials()
    total = len(trials) * len(spec.workloads)
    console.print(f"[bold]testbed run[/] {spec.name}: {len(spec.workloads)} workload(s) × "
                  f"{len(trials)} framework/worker combination(s) = {total} trials, "
                  f"dataset {spec.dataset.name}, {spec.repeats} repeats; results → {out}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("starting", total=total)

        def on_record(rec: dict[str, Any]) -> None:
            progress.advance(task)
            console.print(_trial_line(rec))

        def on_status(msg: str) -> None:
            progress.update(task, description=msg)
            if not console.is_terminal:  # logs and pipes get each step as a line of its own
                print(f"testbed: {msg}", file=sys.stderr, flush=True)

        result = run_benchmark(spec, out, run_id=run_id, on_record=on_record,
                               on_status=on_status)
    console.print()
    rows = summarize(result.records)
    render_table(rows, console=console)
    if args.report:
        path = write_report(result.records, args.report,
                            "md" if args.report.endswith((".md", ".markdown")) else "html")
        console.print(f"report written to {path}")
    console.print(f"results: {out}  (testbed report {out} --out report.html)")
    if result.failed:
        names = ", ".join(f"{r['workload']}/{r['framework']}x{r['workers']}" for r in result.failed[:5])
        raise RunError(f"{len(result.failed)} of {len(result.records)} trials failed ({names}); "
                       f"see 'error' in {out}")
    return 0


def _check_fits_machine(spec: Any, spec_path: str | None) -> None:
    """A local run starts every worker on this machine: they must fit in its memory."""
    from .spec import SpecError, check_fits_machine

    try:
        check_fits_machine(spec, source="spec" if not spec_path else Path(spec_path).name)
    except SpecError as e:
        raise UsageError(str(e)) from None


def _trial_line(rec: dict[str, Any]) -> str:
    who = f"{rec['workload']:<10} {rec['framework']:>11} ×{rec['workers']:<2}"
    if rec["state"] != "succeeded":
        return f"  [red]✗[/] {who} FAILED: {rec['error']}"
    q = rec["quality"].get(rec["quality_metric"])
    qs = f"{rec['quality_metric']}={q:.4g}" if isinstance(q, (int, float)) else ""
    ph = rec["phases"]
    fault = ""
    if rec.get("faults") and rec["faults"].get("applicable"):
        f = rec["faults"]
        obs = f.get("observed") or {}
        how = (f"finished, {f.get('penalty_seconds') or 0:+.2f}s" if f.get("finished") else
               f"FAILED ({(f.get('error') or '').split(':')[0]})")
        det = obs.get("detected_after_seconds")
        fault = (f"  fault: {len(f.get('killed') or [])} killed, {how}"
                 + (f", detected after {det:.2f}s" if det is not None else ""))
        for key, what in (("node_dead_after_seconds", "node dead"),
                          ("replaced_after_seconds", "replaced")):
            if obs.get(key) is not None:
                fault += f", {what} after {obs[key]:.2f}s"
    return (f"  [green]✓[/] {who} median {rec['median']:.4f}s (IQR {rec['iqr']:.4f})  {qs}  "
            f"start {ph['startup'] or 0:.1f}s  distribute {ph['distribute'] or 0:.3f}s{fault}")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_command

    return report_command(args.results, args.out, args.format, _console())


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_command

    return compare_command(args.a, args.b, _console(), threshold=args.threshold,
                           fail=not args.no_fail)


def cmd_runner(args: argparse.Namespace) -> int:
    """In-pod entry point: connect to a cluster, run one framework × workers, emit JSON."""
    if not args.result_configmap:
        return _run_runner(args, None)
    # The result channel (bench.kube.channel): imported only here, so the engine itself
    # carries no Kubernetes dependency.
    try:
        from .kube.channel import parse_target, publish
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
            err = RunError(f"--result-configmap {args.result_configmap}: cannot publish the "
                           f"results: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            err.published = True  # nothing more to try
            raise err from None

    try:
        return _run_runner(args, send)
    except TestbedError as e:
        if not getattr(e, "published", False):
            send({"error": str(e), "records": []})
        raise


def _run_runner(args: argparse.Namespace, send: Any) -> int:
    from .kube.faults import victim_source
    from .runner import run_benchmark
    from .spec import SpecError, loads_json_unique, parse_spec

    if args.spec_json:
        try:
            data = loads_json_unique(args.spec_json)
        except json.JSONDecodeError as e:
            raise UsageError(f"--spec-json is not valid JSON: {e.msg} at position {e.pos}") from None
        except ValueError as e:  # a key given twice
            raise UsageError(f"--spec-json: {e}") from None
        try:
            spec = parse_spec(data, source="spec")
        except SpecError as e:
            raise UsageError(str(e)) from None
    else:
        ns = argparse.Namespace(**{k: None for k in ("framework", "workers", "workload", "dataset",
                                                      "samples", "features", "path", "uri",
                                                      "endpoint_url", "repeats", "warmup", "timeout")})
        ns.spec, ns.no_baselines = args.spec, True
        spec = _spec_from_args(ns)
    if args.framework not in ("ray", "dask", "dask-on-ray", "local"):
        raise UsageError(f"--framework: unknown framework {args.framework!r}; expected ray, dask, "
                         f"dask-on-ray or local"
                         + did_you_mean(args.framework, ("ray", "dask", "dask-on-ray", "local")))
    if args.framework != "local" and not args.address:
        raise UsageError("--address: the runner connects to an existing cluster; give its address "
                         "(Ray GCS host:port, Dask scheduler tcp://host:port)")
    to_stdout = args.out in (None, "-")
    out = args.out if not to_stdout else os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"testbed-runner-{os.getpid()}.jsonl")
    result = run_benchmark(spec, out, address=args.address, trials=[(args.framework, args.workers)],
                           on_status=lambda m: print(m, file=sys.stderr, flush=True),
                           victims=victim_source())
    payload = {"run_id": result.run_id, "records": result.records}
    if send is not None:
        send(payload)
    if to_stdout:
        print(json.dumps(payload, default=str))
        try:
            os.unlink(out)
        except OSError:
            pass
    if result.failed:
        err = RunError(f"{len(result.failed)} of {len(result.records)} trials failed: "
                       f"{result.failed[0]['error']}")
        err.published = send is not None
        raise err
    return 0


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.05 (5%), got {text!r}") \
            from None
    if not 0 <= v < 100:
        raise argparse.ArgumentTypeError(f"expected a fraction of 0 or more like 0.05 (5%), "
                                         f"got {v:g}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .results import NOISE_FRACTION

    p = _Parser(prog="testbed", description="Benchmark Ray against Dask on ML workloads.")
    p.add_argument("--version", action=_VersionAction,
                   help="print the testbed's version (and Ray's and Dask's) and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    # --debug after the subcommand too; SUPPRESS keeps a subcommand from resetting it to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", parents=[common],
                         help="run a benchmark on local Ray/Dask clusters")
    _add_spec_flags(run)
    run.add_argument("--out", "-o", help="results file (JSON Lines, appended); default results/<name>-<run id>.jsonl")
    run.add_argument("--report", help="also write a report (.html or .md)")
    run.set_defaults(fn=cmd_run)

    rep = sub.add_parser("report", parents=[common],
                         help="tables and an HTML/Markdown report from a results file")
    rep.add_argument("results")
    rep.add_argument("--out", "-o", help="report file (.html or .md)")
    rep.add_argument("--format", choices=("html", "md"),
                     help="the report's format (default: from --out's suffix); without --out "
                          "the report is printed (Markdown without the figures)")
    rep.set_defaults(fn=cmd_report)

    cmp_ = sub.add_parser(
        "compare", parents=[common],
        help="compare two results files (exit 1 when B is slower beyond noise)",
        description="Compare two results files, B relative to A, per workload × framework × "
                    "workers. A change is beyond noise when the medians differ by more than both "
                    "IQRs and by more than --threshold of A's median. Exit status 1 when any "
                    "trial is slower in B beyond noise or failed in B only (a regression), so it "
                    "can gate CI; --no-fail only prints.")
    cmp_.add_argument("a", help="results file A (the reference, e.g. before)")
    cmp_.add_argument("b", help="results file B (e.g. after)")
    cmp_.add_argument("--threshold", type=_threshold, default=NOISE_FRACTION, metavar="FRACTION",
                      help=f"smallest relative change of the median that counts (default "
                           f"{NOISE_FRACTION:g} = {NOISE_FRACTION * 100:g}%%)")
    cmp_.add_argument("--no-fail", action="store_true",
                      help="exit 0 even when B is slower beyond noise (only print)")
    cmp_.set_defaults(fn=cmd_compare)

    rn = sub.add_parser("runner", parents=[common],
                        help="in-pod entry point: run one trial against a cluster")
    rn.add_argument("--framework", required=True)
    rn.add_argument("--workers", type=_positive_int, required=True)
    rn.add_argument("--address", help="Ray GCS host:port or Dask scheduler tcp://host:port")
    g = rn.add_mutually_exclusive_group()
    g.add_argument("--spec", help="spec YAML file")
    g.add_argument("--spec-json", help="spec as JSON text")
    rn.add_argument("--out", "-o", help="results file (JSON Lines); '-' or omitted: JSON on stdout")
    rn.add_argument("--result-configmap", metavar="NAMESPACE/NAME",
                    help="also publish the results to this ConfigMap (the operator's result "
                         "channel; uses the pod's service account or $KUBECONFIG)")
    rn.set_defaults(fn=cmd_runner)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .lifecycle import Interrupted, SignalGuard

    with SignalGuard():
        try:
            code = _main(argv)
        except Interrupted as e:
            _exit_interrupted(e)
    from .runner import ABANDONED

    if any(t.is_alive() for t in ABANDONED):
        # A timed-out trial's thread is still busy; everything is on disk, so leave now
        # instead of waiting for it at interpreter shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _exit_interrupted(e: Any) -> None:
    """SIGINT/SIGTERM/SIGHUP: the engines stopped their clusters on the way out; kill whatever
    of ours is left (a second signal kills at once), then exit with 128 + the signal."""
    import time

    from .lifecycle import cleanup_after_interrupt

    t0 = time.monotonic()
    print(f"testbed: {e.name}: stopping what this run started (again to kill at once)",
          file=sys.stderr, flush=True)
    left = cleanup_after_interrupt()
    print(f"testbed: interrupted by {e.name}; stopped in {time.monotonic() - t0:.1f}s"
          + (f" ({left} leftover process(es) killed)" if left else "")
          + "; results measured so far are on disk", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Threads of an interrupted trial, Ray's and Dask's clients: none of them may hold the exit.
    os._exit(e.exit_code)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("TESTBED_DEBUG"))
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TestbedError as e:
        if debug:
            raise
        print(f"testbed: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted; results measured so far are on disk", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure: one line, the traceback behind --debug
        if debug:
            raise
        print(f"testbed: error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
