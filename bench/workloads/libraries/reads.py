"""Who read what, from the libraries' own task records: the per-worker ``data`` figures of
``etl`` and ``xgboost``, whose reads the libraries run themselves (``ray.data.read_parquet``,
``dask.dataframe.read_parquet``, ``xgboost.dask``'s chunks), so :func:`bench.data.read_partitions`
cannot time them.

* Dask (a distributed cluster): the scheduler's task stream (``distributed.get_task_stream``,
  distributed/diagnostics/task_stream.py: one entry per task run, with its ``key``, the
  ``worker`` address and ``startstops``, whose ``compute`` intervals are the task's run time);
  the read tasks are known by their keys; each worker's peak RSS is its process's
  ``ru_maxrss`` at the end of the run (``client.run``).
* Ray Data: the executed Dataset's stats (``Dataset._raw_stats()``, ray/data/_internal/stats.py
  ``DatasetStats.metadata``: per operator, the ``BlockStats`` of its output blocks), whose
  ``exec_stats`` (ray/data/block.py ``BlockExecStats``: ``node_id``, ``task_idx``) and
  ``task_exec_stats`` (``TaskExecWorkerStats``: ``task_wall_time_s``, ``max_uss_bytes``, the
  task's peak unique memory) say where each read task ran, for how long and at what memory.
  Ray Data's file reader groups files into read tasks (``ListFiles`` hands each task a
  manifest, ray/data/_internal/planner/plan_read_files_op.py) and reports no task's files, so
  partitions and bytes per worker are null there; nor does it report RSS, only USS.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.data.readers import peak_rss

RAY_DATA_FILES = ("Ray Data's file reader groups the files into read tasks and reports no "
                  "task's files (ray/data/_internal/planner/plan_read_files_op.py)")
RAY_DATA_RSS = ("Ray Data reports each task's peak USS (TaskExecWorkerStats.max_uss_bytes), "
                "not RSS: see peak_uss_by_worker")


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dask_read_tasks(client: Any, stream: Sequence[dict[str, Any]],
                    keys: dict[Any, list[int] | None]) -> list[dict[str, Any]]:
    """The entries of a task stream whose key is in ``keys`` (key → the partitions that task
    read), as :func:`bench.data.readers.task_data_record` takes them; a worker is named as
    Dask names it (``bench.data.readers.worker_id``)."""
    hits = [t for t in stream if _key(t["key"]) in keys]
    addresses = sorted({t["worker"] for t in hits})
    names = {a: str(w.get("name", a))
             for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    rss: dict[str, int] = client.run(peak_rss, workers=addresses) if addresses else {}
    return [{"worker": names.get(t["worker"], t["worker"]), "partitions": keys[_key(t["key"])],
             "seconds": sum(s["stop"] - s["start"] for s in t["startstops"]
                            if s["action"] == "compute"),
             "peak_rss": rss.get(t["worker"])} for t in hits]


def dask_read_keys(parts: Sequence[Any], files: int) -> dict[Any, list[int] | None]:
    """Key → dataset partitions of each of ``parts``, ``dd.read_parquet(files).to_delayed()``:
    one task per file, in the files' order (None per key when there are not as many)."""
    one = len(parts) == files
    return {_key(d.key): [i] if one else None for i, d in enumerate(parts)}


def _walk(stats: Any) -> list[tuple[str, list[Any]]]:
    out = list(stats.metadata.items())
    for parent in stats.parents:
        out.extend(_walk(parent))
    return out


def ray_data_read_tasks(ds: Any) -> list[dict[str, Any]]:
    """The read tasks of an executed Ray Dataset (its operators named ``Read...``), one entry
    per task (see the module docstring): its node's IP, wall seconds and peak USS."""
    import ray

    ips = {n["NodeID"]: n["NodeManagerAddress"]
           for n in ray.nodes()}  # type: ignore[no-untyped-call]  # (ray: unannotated)
    tasks: dict[tuple[str, Any], dict[str, Any]] = {}
    for op, blocks in _walk(ds._raw_stats()):
        if not op.startswith("Read"):
            continue
        for n, b in enumerate(blocks):
            ex, task = b.exec_stats, b.task_exec_stats
            if ex is None:
                continue
            key = (op, ex.task_idx if ex.task_idx is not None else f"block-{n}")
            seconds = task.task_wall_time_s if task is not None else ex.wall_time_s or 0.0
            uss = task.max_uss_bytes if task is not None else None
            t = tasks.setdefault(key, {"worker": ips.get(ex.node_id, ex.node_id),
                                       "partitions": None, "seconds": 0.0, "peak_rss": None,
                                       "peak_uss": None})
            # task_wall_time_s is the task's time up to each block it yields: keep the last
            t["seconds"] = max(t["seconds"], float(seconds))
            if uss is not None:
                t["peak_uss"] = max(t["peak_uss"] or 0, int(uss))
    return list(tasks.values())
