"""What one dead worker costs each framework, measured in one run.

    .venv/bin/python benchmarks/bench_faults.py [--repeats 3] [--out DIR]

For ``knn``, ``kmeans`` and ``gridsearch`` on 2 workers, one worker is SIGKILLed 40% into an
extra run (``faults``), with:

* Dask, workers under nannies (the default) and ``allowedFailures: 3``;
* Ray with its default node health checks (every 3 s, dead after 5 missed) and with fast ones
  (every 0.5 s, dead after 3), ``maxRetries: 3`` both times.

Printed per trial: the fault-free median, the faulted run, the penalty (their difference) and
the penalty relative to the median, the framework's detection time, when Ray's GCS marked the
node dead or Dask's nanny brought a replacement, and the retried/recomputed tasks.  The
records go to ``--out`` (one file per setup), with two reports (tables and ``faults.png``):
``report-default.md`` (Dask and Ray with their defaults) and ``report-fast-ray.md`` (Dask and
Ray with fast health checks); a report keeps one record per workload × framework × workers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from bench.results import describe, read_records  # noqa: E402
from bench.runner import run_benchmark  # noqa: E402
from bench.spec import parse_spec  # noqa: E402

SYNTH = {"name": "synthetic", "samples": 60000, "features": 20}
CASES = [  # (dataset, workload)
    (SYNTH, {"name": "knn", "params": {"chunks_per_worker": 8}}),
    (SYNTH, {"name": "kmeans", "params": {"n_init": 8, "max_iter": 300}}),
    ({"name": "digits"}, {"name": "gridsearch"}),
]
SETUPS = [  # (label, file slug, framework, spec overrides)
    ("dask, nanny", "dask", "dask", {}),
    ("ray, default health checks", "ray-default", "ray", {}),
    ("ray, fast health checks", "ray-fast", "ray",
     {"ray": {"healthCheckPeriodMs": 500, "healthCheckFailureThreshold": 3}}),
]
REPORTS = {"report-default.md": ("dask", "ray-default"), "report-fast-ray.md": ("dask", "ray-fast")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="bench-faults-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for label, slug, framework, over in SETUPS:
        results = out_dir / f"faults-{slug}.jsonl"
        for dataset, workload in CASES:
            spec = {"name": "bench-faults", "frameworks": [framework], "workers": [2],
                    "baselines": False, "repeats": args.repeats, "warmup": 1,
                    "dataset": dataset, "workloads": [workload],
                    "faults": {"killWorkers": 1, "afterFraction": 0.4, "seed": 1,
                               "detectTimeoutSeconds": 60}, **over}
            before = len(read_records(results)) if results.exists() else 0
            run_benchmark(parse_spec(spec), str(results))
            rec = read_records(results)[before]
            rows.append((label, rec))
            print(_line(label, rec), flush=True)
    for name, slugs in REPORTS.items():
        records = [r for slug in slugs for r in read_records(out_dir / f"faults-{slug}.jsonl")]
        write_report(records, out_dir / name, "md")
    print(f"\n{len(rows)} faulted trials in {time.perf_counter() - t_all:.0f} s; records and "
          f"reports ({', '.join(REPORTS)}) in {out_dir}")
    return 0


def _line(label: str, rec: dict) -> str:
    f = rec.get("faults") or {}
    obs = f.get("observed") or {}
    median = describe(rec.get("seconds") or [])["median"]
    if not f.get("applicable") or median is None:
        why = rec.get("error") or f.get("reason")
        return f"{label:<28} {rec['workload']:<10} not measured: {why}"
    penalty = f["penalty_seconds"]
    then = (f"node dead {obs['node_dead_after_seconds']:.2f} s"
            if obs.get("node_dead_after_seconds") is not None
            else f"replaced {obs['replaced_after_seconds']:.2f} s"
            if obs.get("replaced_after_seconds") is not None else "—")
    redo = obs.get("retried_tasks", obs.get("recomputed_tasks"))
    det = obs.get("detected_after_seconds")
    return (f"{label:<28} {rec['workload']:<10} median {median:6.3f} s  faulted "
            f"{f['seconds']:6.3f} s"
            f"  penalty {penalty:+7.3f} s ({penalty / median:+6.0%})"
            f"  {'finished' if f.get('finished') else 'FAILED'}"
            f"{'' if f.get('quality_matches') in (True, None) else ' (quality differs)'}"
            f"  detected {det if det is None else f'{det:.2f} s'}  {then}"
            f"  retried/recomputed {redo}")


if __name__ == "__main__":
    sys.exit(main())
