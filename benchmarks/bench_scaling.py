"""Scaling on partitioned data larger than one worker's memory (issue 14, section 3).

    .venv/bin/python benchmarks/bench_scaling.py [--gib 3] [--worker-memory 512Mi]
        [--workers 1,2,4] [--frameworks ray,dask] [--workloads kmeans,etl] [--data DIR]

1. Writes (once; reused from ``--data``) synthetic partitioned datasets of ``--gib`` GiB on
   disk: ``classification`` for the partitioned K-Means (``strategy: lloyd``: every Lloyd step
   reads each partition in its own task) and ``transactions`` for ``etl``.
2. Measures each framework's idle footprint: the resident memory of one worker of a started
   cluster that has run nothing.
3. Runs every workload with 1, 2 and 4 workers per framework, each worker limited to
   ``--worker-memory`` (Dask: ``--memory-limit``; Ray: the node's ``--memory`` and object
   store), and prints per trial: median seconds, rows/s, GB/s read, the peak resident memory of
   the largest worker, spilled bytes, and the goal
   ``peak per worker < 1.5 × (data size / workers) + idle footprint``.

The dataset must be at least 4× one worker's memory limit (checked). Every ratio printed comes
from this one run; ``docs/performance.md`` records a run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import make_dataset, open_dataset  # noqa: E402
from bench.engines import make_engine  # noqa: E402
from bench.params import WORKLOADS  # noqa: E402
from bench.quantities import parse_quantity  # noqa: E402
from bench.runner import run_benchmark  # noqa: E402
from bench.spec import parse_spec  # noqa: E402

GIB = 2**30
# Bytes per row on disk, roughly (float32 features, snappy): sizes the datasets to --gib.
CLASSIFICATION_COLUMNS = 32
KINDS = {"kmeans": "classification", "pca": "classification", "etl": "transactions"}


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def dataset(kind: str, root: Path, gib: float, partitions: int) -> str:
    """A dataset of about ``gib`` GiB on disk (made once, then reused)."""
    uri = str(root / f"{kind}-{gib:g}gib-{partitions}p")
    if (Path(uri) / "_manifest.json").exists():
        return uri
    # Size a small sample first, then scale the row count to the target bytes.
    probe = str(root / f".probe-{kind}")
    make_dataset(kind, probe, rows=200_000, columns=CLASSIFICATION_COLUMNS, partitions=2,
                 seed=0, overwrite=True)
    per_row = open_dataset(probe).total_bytes / 200_000
    rows = int(gib * GIB / per_row)
    print(f"writing {kind}: {rows:,} rows in {partitions} partitions → {uri}", flush=True)
    t0 = time.perf_counter()
    make_dataset(kind, uri, rows=rows, columns=CLASSIFICATION_COLUMNS, partitions=partitions,
                 seed=0, overwrite=True)
    print(f"  {open_dataset(uri).total_bytes / GIB:.2f} GiB in {time.perf_counter() - t0:.0f} s")
    return uri


def idle_footprint(framework: str, memory: int) -> int:
    """Resident bytes of one started, idle worker (the larger of two), counted the way the
    trials count a worker: its whole process tree (Ray: the node's ``ray start``, raylet, agents
    and idle workers; Dask: the nanny and its worker process)."""
    with make_engine(framework, 2, memory_per_worker=memory) as engine:
        engine.start()
        time.sleep(2)  # (let the workers finish importing; a measurement, not a race)
        per_worker = []
        for proc in engine.worker_processes():
            total = 0
            for p in (proc, *proc.children(recursive=True)):
                with contextlib.suppress(psutil.Error):  # (a process may have exited)
                    total += p.memory_info().rss
            per_worker.append(total)
    return max(per_worker) if per_worker else 0


def run(framework: str, workers: int, workload: str, uri: str, memory: str, repeats: int,
        out: Path) -> dict[str, Any]:
    params: dict[str, Any] = {"strategy": "lloyd", "max_iter": 5} if workload == "kmeans" else {}
    spec = parse_spec({
        "name": f"scaling-{workload}", "frameworks": [framework], "workers": [workers],
        "repeats": repeats, "warmup": 0, "baselines": False, "timeoutSeconds": 3600,
        "workerResources": {"cpu": 1, "memory": memory},
        "dataset": {"name": "parquet", "uri": uri},
        "workloads": [{"name": workload, "params": params}],
    })
    result = run_benchmark(spec, str(out))
    return dict(result.records[-1])


def report(rec: dict[str, Any], data_bytes: int, rows: int, idle: int, workers: int) -> str:
    if rec.get("state") != "succeeded":
        return f"FAILED: {str(rec.get('error'))[:200]}"
    median = rec["median"]
    data = rec.get("data") or {}
    peak = max((data.get("peak_rss_by_worker") or {}).values(), default=0)
    peak = max(peak, (rec.get("resources") or {}).get("rss_peak_max_worker") or 0)
    spilled = sum((data.get("spilled") or {}).values())
    bound = 1.5 * data_bytes / workers + idle
    return (f"{median:8.2f} s  {rows / median / 1e6:6.2f} M rows/s  "
            f"{data_bytes / median / 1e9:5.2f} GB/s  peak/worker {peak / 2**20:6.0f} MiB  "
            f"(goal < {bound / 2**20:.0f} MiB: {'PASS' if peak < bound else 'FAIL'})  "
            f"spilled {spilled / 2**20:.0f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=3.0)
    ap.add_argument("--worker-memory", default="512Mi")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--frameworks", default="ray,dask")
    ap.add_argument("--workloads", default="kmeans,etl")
    ap.add_argument("--partitions", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", help="folder for the datasets (default: a temporary one)")
    args = ap.parse_args()
    memory = parse_quantity(args.worker_memory)
    if args.gib * GIB < 4 * memory:
        sys.exit(f"--gib {args.gib:g} is less than 4 × --worker-memory {args.worker_memory}")
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS or w not in KINDS]
    if unknown:
        sys.exit(f"--workloads: {unknown} cannot run here (known: {sorted(KINDS)})")
    root = Path(args.data or tempfile.mkdtemp(prefix="bench-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    out = root / "results.jsonl"

    section(f"1. datasets: {args.gib:g} GiB each, {args.partitions} partitions")
    uris = {w: dataset(KINDS[w], root, args.gib, args.partitions) for w in workloads}

    section(f"2. idle footprint of one worker ({args.worker_memory} limit)")
    frameworks = [f for f in args.frameworks.split(",") if f]
    idle = {f: idle_footprint(f, memory) for f in frameworks}
    for f, b in idle.items():
        print(f"{f:6s} {b / 2**20:6.0f} MiB")

    section("3. runs")
    summary = []
    for workload in workloads:
        ds = open_dataset(uris[workload])
        rows = int(ds.manifest["rows"])
        for framework in frameworks:
            for workers in (int(w) for w in args.workers.split(",")):
                rec = run(framework, workers, workload, uris[workload], args.worker_memory,
                          args.repeats, out)
                line = report(rec, ds.total_bytes, rows, idle[framework], workers)
                print(f"{workload:7s} {framework:5s} x{workers}: {line}", flush=True)
                summary.append({"workload": workload, "framework": framework,
                                "workers": workers, "line": line})
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
