"""Two tables of the libraries tier (issue 14): seconds per operation of a staged ``etl`` run
(``extra.stage_seconds``, Ray Data vs Dask DataFrame operation by operation), and what each
worker read (the record's ``data`` field: partitions, bytes, read tasks, read seconds, peak
memory), for every record that has them; ``bench.report.sections`` makes them sections."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.results import latest_records

from .formatting import MISSING, column_label, fmt_number, fmt_ratio, fmt_seconds
from .table import Cell, Grid

OPERATIONS = ("read", "filter", "aggregate", "join", "sort", "write")
"""etl's operations in pipeline order (``bench.workloads.libraries.etl``)."""

STAGES_INTRO = (
    "A staged etl run (params.stages) materializes after each operation (Ray Data: "
    "materialize; Dask: persist, then wait) and times each one; its sum exceeds the fused "
    "pipeline's time, which lets each library overlap and fuse operations. Seconds of the last "
    "timed repeat. Ray ÷ Dask: Ray's seconds over Dask's for the same worker count (above 1: "
    "Ray Data slower).")

DATA_INTRO = (
    "What each worker read in the last timed repeat, as the record's data field gives it: "
    "partitions (files) and their bytes, read tasks, the seconds they ran, and the worker's "
    "peak memory (RSS; Ray Data reports each task's peak USS instead, marked USS). — where a "
    "library does not report the figure; the notes say why.")


def _stages(r: dict[str, Any]) -> dict[str, float] | None:
    s = (r.get("extra") or {}).get("stage_seconds")
    return s if isinstance(s, dict) and s else None


def stage_grid(records: Sequence[dict[str, Any]]) -> Grid | None:
    """Per workload and worker count, a row per operation: each staged trial's seconds, and
    Ray ÷ Dask where both ran; None when no record has stage timings."""
    latest = [r for r in latest_records(records).values()
              if r.get("state") == "succeeded" and _stages(r)]
    if not latest:
        return None
    trials = [(str(r["framework"]), int(r.get("workers") or 0)) for r in latest]
    labels = [column_label(f, w) for f, w in trials]
    counts = sorted({w for f, w in trials if f == "ray"} & {w for f, w in trials if f == "dask"})
    headers = ["Workload", "Operation", *labels, *[f"Ray ÷ Dask ×{w}" for w in counts]]
    body: list[list[Cell]] = []
    for workload in dict.fromkeys(str(r["workload"]) for r in latest):
        mine = {(str(r["framework"]), int(r.get("workers") or 0)): _stages(r) or {}
                for r in latest if r["workload"] == workload}
        ops = [*OPERATIONS, *sorted({k for s in mine.values() for k in s} - set(OPERATIONS))]
        for op in [*ops, "total"]:
            line: list[Cell] = [(workload, None), (op, None)]
            line += [(fmt_seconds(_value(mine, t, op)), None) for t in trials]
            for w in counts:
                ray, dask = _value(mine, ("ray", w), op), _value(mine, ("dask", w), op)
                line.append((fmt_ratio(ray / dask) if ray is not None and dask else MISSING,
                             None))
            body.append(line)
    return headers, body


def _value(stages: dict[tuple[str, int], dict[str, float]], trial: tuple[str, int], op: str
           ) -> float | None:
    s = stages.get(trial)
    if s is None:
        return None
    return sum(s.values()) if op == "total" else s.get(op)


def _mb(v: Any) -> str:
    return MISSING if v is None else f"{v / 1e6:.1f}"


def data_grid(records: Sequence[dict[str, Any]]) -> tuple[Grid, list[str]] | None:
    """A row per worker of each trial whose ``data`` field has per-worker figures, and the
    notes on figures a library does not report; None when no record has any."""
    body: list[list[Cell]] = []
    notes: dict[str, None] = {}
    for r in latest_records(records).values():
        d = r.get("data")
        if r.get("state") != "succeeded" or not isinstance(d, dict):
            continue
        label = column_label(str(r["framework"]), int(r.get("workers") or 0))
        for field, why in (d.get("unavailable") or {}).items():
            notes[f"{r['workload']}, {label}: {field}: {why}"] = None
        seconds = d.get("read_seconds_by_worker")
        if not seconds:
            continue
        parts = d.get("partitions_by_worker")
        nbytes = d.get("bytes_read_by_worker")
        tasks = d.get("read_tasks_by_worker")
        rss, uss = d.get("peak_rss_by_worker"), d.get("peak_uss_by_worker")
        for w in sorted(seconds):
            memory = _mb(rss.get(w)) if rss else (f"{_mb(uss.get(w))} USS" if uss else MISSING)
            body.append([
                (str(r["workload"]), None), (label, None), (w, None),
                (fmt_number(len(parts[w])) if parts and w in parts else MISSING, None),
                (_mb(nbytes.get(w)) if nbytes else MISSING, None),
                (fmt_number(tasks.get(w)) if tasks else MISSING, None),
                (fmt_seconds(seconds[w]), None), (memory, None)])
    if not body and not notes:
        return None
    headers = ["Workload", "Trial", "Worker", "Partitions", "MB read", "Read tasks",
               "Read s", "Peak memory MB"]
    return (headers, body), list(notes)
