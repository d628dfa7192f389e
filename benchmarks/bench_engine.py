"""Performance checks of the engine, measured in one run and printed as ratios.

    .venv/bin/python benchmarks/bench_engine.py [--skip-default] [--samples 200000] [--out DIR]

1. ``testbed run`` with no arguments (the default benchmark): wall time, goal < 300 s.
2. Synthetic 200,000 × 64 data, ``knn`` and ``kmeans`` on Ray and Dask with 2 workers against the
   local baseline with 1 thread and with both cores: goal ≥ 1.6× faster than 1 thread and within
   15% of 2 threads.
3. The ``tasks`` workload: per-task overhead of each framework (async and synchronous).
4. The ``noop`` workload: what the harness adds per timed repeat, goal < 5 ms.

Timing claims live here, not in the unit tests: this machine is shared and noisy, and the
printed ratios come from a single run so they compare like with like.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import read_records, summarize  # noqa: E402
from bench.runner import run_benchmark  # noqa: E402
from bench.spec import parse_spec  # noqa: E402


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def default_run(out_dir: Path) -> float:
    section("1. testbed run (defaults)")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--out",
                        str(out_dir / "default.jsonl")], cwd=out_dir, capture_output=True,
                        text=True)
    wall = time.perf_counter() - t0
    ok = p.returncode == 0
    print(f"exit {p.returncode}; wall {wall:.1f} s (goal < 300 s): "
          f"{'PASS' if ok and wall < 300 else 'FAIL'}")
    if not ok:
        print(p.stderr[-2000:])
    return wall


def synthetic(out_dir: Path, samples: int, repeats: int, only: list[str]) -> None:
    section(f"2. synthetic {samples:,} x 64: knn and kmeans, 2 workers vs local")
    spec = parse_spec({
        "name": "synthetic-scaling",
        "frameworks": ["ray", "dask"], "workers": [2], "repeats": repeats, "warmup": 1,
        "dataset": {"name": "synthetic", "samples": samples, "features": 64, "classes": 10,
                    "testSize": 0.05, "seed": 0},
        "workloads": [w for w in ({"name": "knn", "params": {"chunks_per_worker": 2}},
                                  {"name": "kmeans", "params": {"n_clusters": 10, "n_init": 4,
                                                                "max_iter": 50}})
                      if w["name"] in only],
        "workerResources": {"cpu": "1", "memory": "4Gi"},
    })
    out = out_dir / "synthetic.jsonl"
    run_benchmark(spec, str(out), trials=[("local", 1), ("local", 2), ("ray", 2), ("dask", 2)],
                  on_record=lambda r: print(f"  {r['workload']:<7} {r['framework']:>5} "
                                            f"x{r['workers']}: "
                                            f"{r['state']} median "
                                            f"{r['median'] or float('nan'):.3f} s "
                                            f"seconds {[round(s, 3) for s in r['seconds']]} "
                                            f"distribute {r['phases']['distribute'] or 0:.2f} s "
                                            f"{r['error'] or ''}", flush=True))
    rows = {(r["workload"], r["framework"], r["workers"]): r for r in summarize(read_records(out))}
    print(f"\n  {'workload':<8} {'framework':<6} {'median s':>9} {'vs local 1t':>12} "
          f"{'vs local 2t':>12}  verdict")
    for wl in only:
        for fw in ("ray", "dask"):
            r = rows.get((wl, fw, 2))
            if not r or r["median"] is None:
                print(f"  {wl:<8} {fw:<6} FAILED")
                continue
            v1, v2 = r["vs_local_1"], r["vs_local_all"]
            ok = v1 is not None and v2 is not None and v1 >= 1.6 and v2 >= 1 / 1.15
            print(f"  {wl:<8} {fw:<6} {r['median']:>9.3f} {v1:>11.2f}x {v2:>11.2f}x  "
                  f"{'PASS' if ok else 'FAIL'} (goal: >= 1.60x and >= 0.87x)")


def overheads(out_dir: Path) -> None:
    section("3. per-task overhead (tasks workload) and 4. harness overhead (noop)")
    spec = parse_spec({
        "name": "overhead", "frameworks": ["ray", "dask", "dask-on-ray"], "workers": [1, 2],
        "repeats": 5, "warmup": 1, "baselines": False,
        "workloads": [{"name": "tasks", "params": {"count": 1000, "sync_count": 100}},
                      {"name": "noop"}],
    })
    out = out_dir / "overhead.jsonl"
    run_benchmark(spec, str(out), trials=[("local", 1), *spec.trials()])
    recs = read_records(out)
    print(f"\n  {'framework':<12} {'workers':>7} {'async us/task':>14} {'sync us/task':>13} "
          f"{'tasks/s':>9}")
    for r in recs:
        if r["workload"] != "tasks" or r["state"] != "succeeded":
            continue
        e = r["extra"]
        print(f"  {r['framework']:<12} {r['workers']:>7} {e['per_task_us_async']:>14.0f} "
              f"{e['per_task_us_sync']:>13.0f} {e['tasks_per_s'] or 0:>9.0f}")
    print("  published: Dask 200-1000 us/task; Ray ~1000 us per synchronous task, ~125 us per "
          "task submitted asynchronously on one node")
    worst = 0.0
    for r in recs:
        if r["workload"] == "noop" and r["state"] == "succeeded":
            per = r["extra"]["harness_overhead_s"] + (r["median"] or 0)
            worst = max(worst, per)
            print(f"  noop {r['framework']:<12} x{r['workers']}: "
                  f"{per * 1e6:.1f} us per timed repeat")
    print(f"  harness overhead per repeat, worst: {worst * 1e3:.3f} ms (goal < 5 ms): "
          f"{'PASS' if worst < 0.005 else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-default", action="store_true", help="skip the default-run timing")
    ap.add_argument("--skip-overheads", action="store_true", help="skip sections 3 and 4")
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--workloads", default="knn,kmeans", help="section 2: knn, kmeans or both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="directory for the results files (default: a temp dir)")
    args = ap.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="testbed-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(f"results in {out_dir}; cores {os.cpu_count()}")
    if not args.skip_default:
        default_run(out_dir)
    synthetic(out_dir, args.samples, args.repeats, args.workloads.split(","))
    if not args.skip_overheads:
        overheads(out_dir)


if __name__ == "__main__":
    main()
