"""Scaling on partitioned data larger than one worker's memory (issue 14, section 3).

    .venv/bin/python benchmarks/bench_scaling.py [--gib 3] [--worker-memory 512Mi]
        [--workers 1,2,4] [--frameworks ray,dask] [--workloads kmeans,etl]
        [--partition-mib auto] [--data DIR] [--out DIR] [--clean]

1. Datasets (written once into ``--data``, default ``~/.cache/raydask-testbed/scaling``, and
   reused by every later run; ``--clean`` deletes them): ``blobs`` for the partitioned
   K-Means (``strategy: lloyd``: every Lloyd step reads each partition in its own task) and
   ``transactions`` for ``etl``. Size: ``--gib`` GiB IN MEMORY, the measure the goal uses:
   the Arrow table of the columns the workload reads (K-Means: 32 float32 features; etl:
   customer, amount, quantity); the on-disk size is printed beside it.
2. Partition size: a fresh process reads one probe file (50-80 MiB in memory) and runs the
   workload's per-partition work on it (K-Means: one Lloyd step; etl: to pandas, filter,
   group-by), and reports its peak resident memory per byte of table above the process's
   before; partitions are sized so that one task stays under 15 % of
   ``--worker-memory`` (a Dask worker with the task's modules imported already holds 150-250
   MiB, Dask pauses a worker at 80 % of its limit and its nanny kills it at 95 %).
3. Idle footprint of a worker, per framework, counted as the trials count it: a started
   two-worker cluster that has run nothing, sampled for 3 s by the trial's own samplers (a
   Ray node: its raylet and every process under it; a Dask worker: its worker process and its
   children).
4. Every workload with 1, 2 and 4 workers per framework, each worker limited to
   ``--worker-memory`` (Dask: ``--memory-limit``; Ray: the node's ``--memory`` and object
   store). Per trial: seconds, rows/s (rows × passes over the data), GB/s read (bytes read
   from disk), the memory of the largest worker three ways, read at its RSS peak (see
   ``MEASURES``): the RSS sum of its processes (``resources.rss_peak_max_worker``), their PSS
   (``resources.pss_at_rss_peak_max_worker``) and their unique memory, each physical page
   counted once as a container's memory cgroup charges it
   (``resources.unique_at_rss_peak_max_worker``; needs root), spilled
   bytes (Ray's object spilling, Dask's worker spill to disk, cumulative over the trial's
   cluster) and the goal ``peak per worker < 1.5 × (data in memory / workers) + idle
   footprint``, judged by each measure (against the idle footprint by the same
   measure); then the quality check across trials (etl: every checksum equal; kmeans:
   inertia within the workload's 2 %).

The dataset must be at least 4× one worker's memory limit (``--allow-small`` for trying the
script at a small size). Every figure printed comes from this one run; the table is also
written as Markdown to ``<out>/scaling.md`` (``docs/performance.md`` section 7 records a run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.data import make_dataset, open_dataset  # noqa: E402
from bench.engines import make_engine  # noqa: E402
from bench.errors import RunError  # noqa: E402
from bench.measure import combine_workers  # noqa: E402
from bench.quantities import parse_quantity  # noqa: E402
from bench.runner import run_benchmark  # noqa: E402
from bench.spec import parse_spec  # noqa: E402

GIB, MIB = 2**30, 2**20
CACHE = Path.home() / ".cache" / "raydask-testbed" / "scaling"
KINDS = {"kmeans": "blobs", "etl": "transactions"}
COLUMNS = 32  # blobs features (float32)
CLUSTERS = 8
PROBE_ROWS = {"kmeans": 400_000, "etl": 4_000_000}  # about 50 and 80 MiB in memory
TASK_SHARE = 0.15  # of --worker-memory: what one reading task may use at its peak
# Every process this script starts (probe, Ray nodes, Dask workers) allocates Arrow buffers with
# malloc and trims it: with Arrow's default pool (mimalloc/jemalloc) a Dask worker held ~330 MiB
# between 45 MiB-partition tasks and its nanny killed it at 95 % of 512 MiB. Dask's nanny sets
# MALLOC_TRIM_THRESHOLD_ itself (distributed.yaml, nanny.pre-spawn-environ); Ray gets the same.
MEMORY_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_TRIM_THRESHOLD_": "65536"}

# One reading task of each workload, in a fresh process: prints its peak RSS above the RSS it
# had after importing what the task imports (what a worker has before its first task).
PROBE = r"""
import json, resource, sys
import numpy as np, pyarrow.parquet as pq
import psutil
from bench.data import open_dataset, read_table
from bench.workloads.kmeans import lloyd_table
from bench.workloads.libraries.etl import COLUMNS
workload, uri, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open_dataset(uri)
imported = psutil.Process().memory_info().rss
if workload == "kmeans":
    cols = [c["name"] for c in data.manifest["schema"] if c["name"] != "label"]
    table, _ = read_table(data, 0, cols)
else:
    table = pq.read_table(data.path(data.partitions[0]), columns=COLUMNS)

def task(t):
    if workload == "kmeans":
        lloyd_table(t, np.zeros((k, len(cols))))
    else:
        df = t.to_pandas()
        df = df[df["amount"] > 5.0]
        df.groupby("customer").agg(total=("amount", "sum"), items=("quantity", "sum"),
                                   orders=("amount", "count"))

task(table.slice(0, 1000))  # the lazy imports and one-off allocations: not per-byte costs
size = table.nbytes
del table
before = psutil.Process().memory_info().rss
table = read_table(data, 0, cols)[0] if workload == "kmeans" else pq.read_table(
    data.path(data.partitions[0]), columns=COLUMNS)
task(table)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"task_bytes": peak - before, "file_bytes": data.total_bytes,
                  "table_bytes": size, "imported": imported}))
"""


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def _make(kind: str, uri: str, rows: int, partitions: int) -> None:
    make_dataset(kind, uri, rows=rows, columns=COLUMNS, partitions=partitions, seed=0,
                 classes=CLUSTERS, overwrite=True)


def probe(workload: str, root: Path) -> dict[str, float]:
    """Measured on a one-partition probe dataset (cached): bytes per row on disk
    (``disk_row``) and in memory (``mem_row``: the Arrow table of the columns the workload
    reads), and a reading task's peak memory per in-memory byte (``factor``)."""
    n = PROBE_ROWS[workload]
    uri = str(root / f".probe-{KINDS[workload]}-{n}")
    if not (Path(uri) / "_manifest.json").exists():
        _make(KINDS[workload], uri, n, 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    saved = root / f".probe-{workload}.json"  # measured once: a rerun finds the same sizes
    if saved.exists():
        m = json.loads(saved.read_text())
    else:
        out = subprocess.run([sys.executable, "-c", PROBE, workload, uri, str(CLUSTERS)],
                             env=env, check=True, capture_output=True, text=True, timeout=300)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        saved.write_text(json.dumps(m))
    return {"disk_row": m["file_bytes"] / n, "mem_row": m["table_bytes"] / n,
            "factor": m["task_bytes"] / m["table_bytes"], "imported": m["imported"]}


def dataset(workload: str, root: Path, rows: int, partitions: int) -> str:
    """The dataset of ``workload``: ``rows`` rows in ``partitions`` files (made once)."""
    kind = KINDS[workload]
    uri = str(root / f"{kind}-{rows}r-{partitions}p")
    if (Path(uri) / "_manifest.json").exists():
        print(f"{kind}: cached at {uri}")
        return uri
    print(f"writing {kind}: {rows:,} rows in {partitions} partitions → {uri}", flush=True)
    t0 = time.perf_counter()
    _make(kind, uri, rows, partitions)
    print(f"  {open_dataset(uri).total_bytes / GIB:.2f} GiB on disk in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return uri


def idle_footprint(framework: str, workers: int, memory: int) -> dict[str, int] | None:
    """The largest worker's figure by each of ``MEASURES`` (0 where one is unavailable),
    sampled the way a trial samples them, over 3 s of a started cluster that has run nothing
    (a start that fails, as a Ray node's can on a loaded machine, is tried again, up to 3
    times)."""
    for attempt in range(3):
        try:
            with make_engine(framework, workers, memory_per_worker=memory) as engine:
                time.sleep(2)  # let the workers finish importing (settling, not a race)
                engine.start_sampling(0.1)
                time.sleep(3)
                res = combine_workers(engine.stop_sampling())
            return {m: int(res[key] or 0) for m, key, _ in MEASURES}
        except RunError as e:
            print(f"{framework}: start failed ({attempt + 1} of 3): {str(e).splitlines()[0]}")
    return None  # no goal for this framework's trials, said in their lines


VERDICT = {True: "PASS", False: "FAIL", None: "no idle figure"}
# The measures the goal is judged by: (name, key in the record's ``resources``, label). The RSS
# sum counts a page that several of a worker's processes map once per process (an overcount);
# PSS divides it among every process on the machine that maps it (an undercount: a library
# page shared with another worker is split with it); unique memory counts each physical page
# the worker's processes map once, as a container's memory cgroup charges mapped memory
# (bench.measure.tree_unique: needs root, else 0 and "n/a").
MEASURES = (("rss", "rss_peak_max_worker", "RSS"),
            ("pss", "pss_at_rss_peak_max_worker", "PSS"),
            ("unique", "unique_at_rss_peak_max_worker", "unique"))
STARTUP_FAILURES = ("during start-up", "timed out during startup", "to join", "to connect")


def run(framework: str, workers: int, workload: str, uri: str, memory: str, args: Any,
        out: Path) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if workload == "kmeans":
        params = {"strategy": "lloyd", "max_iter": args.max_iter, "n_clusters": CLUSTERS}
    else:  # Ray Data's default (hash) shuffle reserves more memory than a 512 MiB node has
        params = {"ray_shuffle": "sort_shuffle_pull_based"}
    spec = parse_spec({
        "name": f"scaling-{workload}", "frameworks": [framework], "workers": [workers],
        "repeats": args.repeats, "warmup": 0, "baselines": False,
        "timeoutSeconds": args.trial_timeout,
        "workerResources": {"cpu": 1, "memory": memory},
        "dataset": {"name": "parquet", "uri": uri},
        "workloads": [{"name": workload, "params": params}],
    })
    for _ in range(3):  # a cluster that failed to start (a loaded machine) gets two more goes
        rec = dict(run_benchmark(spec, str(out)).records[-1])
        error = str(rec.get("error") or "")
        if rec.get("state") == "succeeded" or not any(s in error for s in STARTUP_FAILURES):
            break
        print(f"{framework} x{workers}: the cluster did not start; trying again", flush=True)
    return rec


def figures(rec: dict[str, Any], size: int, rows: int, idle: dict[str, int] | None
            ) -> dict[str, Any]:
    """One trial's line of the table (see the module docstring); ``size``: the data's bytes
    in memory."""
    row: dict[str, Any] = {"workload": rec["workload"], "framework": rec["framework"],
                           "workers": rec["workers"], "state": rec.get("state")}
    if rec.get("state") != "succeeded":
        return {**row, "error": str(rec.get("error"))[:300]}
    median = float(rec["median"])
    data, extra = rec.get("data") or {}, rec.get("extra") or {}
    spilled = sum((data.get("spilled") or {}).values())
    if rec["workload"] == "etl":  # one pass; bytes_read = the files' sizes (3 of 6 columns)
        passes, read = 1.0, int(extra.get("bytes_read") or 0)
    else:  # kmeans: every pass reads every partition
        passes = data["reads"] / max(1, len(data["partitions"]))
        read = int(data["bytes_read"])
    res = rec.get("resources") or {}
    share = 1.5 * size / rec["workers"]
    row.update(seconds=median, passes=passes, rows_per_s=rows * passes / median,
               gb_per_s=read / median / 1e9, spilled=spilled, quality=rec.get("quality") or {})
    for m, key, _ in MEASURES:
        value = int(res.get(key) or 0)
        known = idle is not None and value > 0 and idle[m] > 0
        row[m] = value
        row[f"{m}_goal"] = share + idle[m] if idle is not None and idle[m] > 0 else math.nan
        row[f"{m}_pass"] = value < row[f"{m}_goal"] if known else None
    return row


def verdict(r: dict[str, Any], m: str) -> str:
    """``peak < goal VERDICT`` in MiB, or why there is none."""
    if not r[m]:
        return "n/a (needs root)" if m == "unique" else "n/a"
    return f"{r[m] / MIB:.0f} < {r[f'{m}_goal'] / MIB:.0f} {VERDICT[r[f'{m}_pass']]}"


def show(r: dict[str, Any]) -> str:
    head = f"{r['workload']:7s} {r['framework']:5s} x{r['workers']}: "
    if r["state"] != "succeeded":
        return head + f"FAILED: {r['error']}"
    q = ", ".join(f"{k} {v:.6g}" for k, v in sorted(r["quality"].items())
                  if k in ("inertia", "agg_checksum", "out_checksum"))
    return head + (f"{r['seconds']:7.1f} s  {r['rows_per_s'] / 1e6:6.2f} M rows/s  "
                   f"{r['gb_per_s']:5.3f} GB/s  peak/worker MiB: "
                   + "  ".join(f"{label} {verdict(r, m)}" for m, _, label in MEASURES)
                   + f"  spilled {r['spilled'] / MIB:.0f} MiB  ({q})")


def quality(rows: list[dict[str, Any]]) -> list[str]:
    """etl: every checksum equal across trials; kmeans: inertia within 2 % of the first."""
    lines = []
    for workload, keys, rel in (("etl", ("agg_rows", "agg_checksum", "out_rows",
                                        "out_checksum", "sorted"), 0.0),
                                ("kmeans", ("inertia",), 0.02)):
        done = [r for r in rows if r["workload"] == workload and r["state"] == "succeeded"]
        if not done:
            continue
        ref = done[0]["quality"]
        bad = [f"{r['framework']} x{r['workers']} {k}" for r in done for k in keys
               if not math.isclose(r["quality"].get(k, math.nan), ref.get(k, math.nan),
                                   rel_tol=rel, abs_tol=0.0)]
        lines.append(f"{workload}: {', '.join(keys)} {'equal' if rel == 0 else 'within 2 %'} "
                     f"across {len(done)} trials: "
                     + ("PASS" if not bad else "FAIL (" + "; ".join(bad) + ")"))
    return lines


def markdown(rows: list[dict[str, Any]], idle: dict[str, dict[str, int] | None]) -> str:
    out = [("| workload | framework | workers | seconds | speed-up vs 1 | M rows/s | GB/s read "
            "| peak/worker MiB: RSS < goal | PSS < goal | unique < goal | spilled MiB |"),
           "|" + "---|" * 11]
    one = {(r["workload"], r["framework"]): r["seconds"] for r in rows
           if r["state"] == "succeeded" and r["workers"] == 1}
    for r in rows:
        if r["state"] != "succeeded":
            out.append(f"| {r['workload']} | {r['framework']} | {r['workers']} | failed: "
                       f"{r['error'][:80]} |" + " |" * 7)
            continue
        base = one.get((r["workload"], r["framework"]))
        ratio = f"{base / r['seconds']:.2f}×" if base else "–"
        out.append(f"| {r['workload']} | {r['framework']} | {r['workers']} | "
                   f"{r['seconds']:.1f} | {ratio} | {r['rows_per_s'] / 1e6:.2f} | "
                   f"{r['gb_per_s']:.3f} | "
                   + " | ".join(verdict(r, m) for m, _, _ in MEASURES)
                   + f" | {r['spilled'] / MIB:.0f} |")
    out.append("")
    out.append("Idle footprint of one worker: " + ", ".join(
        f"{f} {idle_text(b)}" if b is not None else f"{f} not measured (no start)"
        for f, b in idle.items()))
    return "\n".join(out) + "\n"


def idle_text(b: dict[str, int]) -> str:
    return ", ".join(f"{label} {b[m] / MIB:.0f} MiB" if b[m] else f"{label} n/a"
                     for m, _, label in MEASURES)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=3.0,
                    help="each dataset's size in memory (the Arrow table of the columns its "
                         "workload reads)")
    ap.add_argument("--worker-memory", default="512Mi")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--frameworks", default="ray,dask")
    ap.add_argument("--workloads", default="kmeans,etl")
    ap.add_argument("--partition-mib", default="auto",
                    help="on-disk MiB per partition, or auto (from the probe measurement)")
    ap.add_argument("--max-iter", type=int, default=3, help="K-Means Lloyd steps at most")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--trial-timeout", type=int, default=900)
    ap.add_argument("--until", type=float, default=0.0,
                    help="Unix time after which no trial starts (and none runs past)")
    ap.add_argument("--data", default=str(CACHE), help=f"dataset cache (default {CACHE})")
    ap.add_argument("--out", help="results folder (default: a new one under /tmp)")
    ap.add_argument("--clean", action="store_true", help="delete the dataset cache and exit")
    ap.add_argument("--prepare", action="store_true",
                    help="write (or find) the datasets and exit, running no trial")
    ap.add_argument("--allow-small", action="store_true",
                    help="allow data under 4× --worker-memory (trying the script out)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    root = Path(args.data)
    if args.clean:
        shutil.rmtree(root, ignore_errors=True)
        print(f"removed {root}")
        return 0
    memory = parse_quantity(args.worker_memory)
    if args.gib * GIB < 4 * memory and not args.allow_small:
        sys.exit(f"--gib {args.gib:g} is less than 4 × --worker-memory {args.worker_memory}")
    workloads = [w for w in args.workloads.split(",") if w]
    if unknown := [w for w in workloads if w not in KINDS]:
        sys.exit(f"--workloads: {unknown} cannot run here (known: {sorted(KINDS)})")
    frameworks = [f for f in args.frameworks.split(",") if f]
    counts = [int(w) for w in args.workers.split(",") if w]
    root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-scaling-"))
    out.mkdir(parents=True, exist_ok=True)

    section(f"1-2. datasets: {args.gib:g} GiB in memory each; partition size")
    uris: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for w in workloads:
        m = probe(w, root)
        nrows = int(args.gib * GIB / m["mem_row"])
        if args.partition_mib == "auto":
            part = TASK_SHARE * memory / m["factor"]
            how = (f"a reading task peaks at {m['factor']:.1f}x its table; "
                   f"{TASK_SHARE:.0%} of {memory / MIB:.0f} MiB")
        else:
            part, how = float(args.partition_mib) * MIB, "--partition-mib"
        partitions = max(1, math.ceil(nrows * m["mem_row"] / part))
        print(f"{w}: {m['mem_row']:.1f} B/row in memory ({m['disk_row']:.1f} on disk); a process "
              f"that imported the task's modules: {m['imported'] / MIB:.0f} MiB; {how} "
              f"-> <= {part / MIB:.1f} MiB per partition in memory: {nrows:,} rows in "
              f"{partitions} partitions", flush=True)
        uris[w] = dataset(w, root, nrows, partitions)
        sizes[w] = int(nrows * m["mem_row"])
    if args.prepare:
        return 0

    section(f"3. idle footprint of one worker ({args.worker_memory} limit)")
    idle = {f: idle_footprint(f, 2, memory) for f in frameworks}
    for f, b in idle.items():
        print(f"{f:6s} {idle_text(b)}" if b is not None else f"{f:6s} not measured", flush=True)

    section("4. trials")
    rows: list[dict[str, Any]] = []
    trials = [(wl, f, n) for n in counts for wl in workloads for f in frameworks]
    for workload, framework, workers in trials:
        left = args.until - time.time() if args.until else math.inf
        if left < 60:
            print(f"{workload} {framework} x{workers}: not run (--until)", flush=True)
            continue
        args.trial_timeout = int(min(args.trial_timeout, left))
        ds = open_dataset(uris[workload])
        rec = run(framework, workers, workload, uris[workload], args.worker_memory, args,
                  out / "results.jsonl")
        r = figures(rec, sizes[workload], int(ds.manifest["rows"]), idle[framework])
        r.update(data_bytes=sizes[workload], disk_bytes=ds.total_bytes)
        rows.append(r)
        print(show(r), flush=True)
        (out / "summary.json").write_text(json.dumps(
            {"idle": idle, "rows": rows}, indent=1, default=str))

    section("5. quality")
    checks = quality(rows)
    print("\n".join(checks))
    (out / "scaling.md").write_text(markdown(rows, idle) + "\n" + "\n".join(checks) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.update(MEMORY_ENV)
    sys.exit(main())
