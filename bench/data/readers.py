"""Reading a partitioned dataset where the work runs: each task reads its own partition.

:func:`read_partitions` maps one task per partition over the engine (Ray tasks, Dask
futures, threads for the local baseline); the task opens the dataset's filesystem in its own
process, reads its file with pyarrow, applies ``fn`` to the table and returns ``fn``'s (small)
result with what the read cost: so the driver never holds more than the results. For the
libraries that read by themselves (``ray.data.read_parquet``, ``dask.dataframe.read_parquet``)
:func:`ray_dataset` and :func:`dask_dataframe` give them the same files and filesystem.

The record's ``data`` field (:func:`data_record`)::

    {"uri", "partitions": [indices read], "partitions_by_worker": {worker: [indices]},
     "reads": partition reads (an iterative workload reads each partition once a step),
     "bytes_read", "read_seconds_by_worker": {worker: s}, "peak_rss_by_worker": {worker: B},
     "spilled": {"ray_spilled_bytes" | "dask_spilled_bytes": int}}

A worker is a Ray node (its IP), a Dask worker (its name), ``process-<pid>`` (a process of
the pool Dask's ``processes`` scheduler starts) or ``driver`` (the baseline's threads, Dask's
``threads`` and ``synchronous`` schedulers); its peak RSS is the largest ``ru_maxrss`` of its
processes that read.
"""
from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.frameworks import cluster_kind

from .layout import PartitionedData

if TYPE_CHECKING:
    import pyarrow as pa

TableFn = Callable[["pa.Table"], Any]


class Engine(Protocol):
    """What the readers use of a ``bench.engines.Engine`` (this layer is below the engines):
    its framework and ``map``; a Dask engine's ``client`` for the spill figure."""

    framework: str

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> list[Any]: ...


def _num_rows(table: pa.Table) -> int:
    return int(table.num_rows)


def worker_id() -> str:
    """The testbed worker this process belongs to (see the module docstring)."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        pass
    try:
        import ray

        if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except ImportError:
        pass
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        # a process pool's worker (Dask's ``processes`` scheduler): each is its own reader
        return f"process-{os.getpid()}"
    return "driver"


def peak_rss() -> int:
    """This process's peak resident set so far, bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def read_table(data: PartitionedData, index: int, columns: Sequence[str] | None = None
               ) -> tuple[pa.Table, int]:
    """Partition ``index`` as a table and the bytes read from storage: the file's size, or
    with ``columns`` the compressed size of those columns' chunks (what a projected read
    fetches, besides the footer)."""
    import pyarrow.parquet as pq

    fs, _ = data.filesystem()
    with fs.open_input_file(data.path(data.partitions[index])) as f:
        size = int(f.size())
        pf = pq.ParquetFile(f)
        table = pf.read(columns=list(columns) if columns else None)
        if columns:
            size = chunk_bytes(pf.metadata, columns)
    return table, size


def chunk_bytes(meta: Any, columns: Sequence[str] | None, uncompressed: bool = False) -> int:
    """The compressed (or ``uncompressed``) size of the column chunks of ``columns`` (every
    column's without) in a Parquet file's metadata."""
    wanted = set(columns) if columns else None
    return int(sum(rg.column(j).total_uncompressed_size if uncompressed
                   else rg.column(j).total_compressed_size
                   for rg in (meta.row_group(i) for i in range(meta.num_row_groups))
                   for j in range(rg.num_columns)
                   if wanted is None or rg.column(j).path_in_schema in wanted))


def _read_task(item: tuple[PartitionedData, int, TableFn, Sequence[str] | None]
               ) -> tuple[Any, dict[str, Any]]:
    data, index, fn, columns = item
    t0 = time.perf_counter()
    table, size = read_table(data, index, columns)
    seconds = time.perf_counter() - t0
    result = fn(table)
    del table
    return result, {"partition": index, "bytes": size, "seconds": seconds,
                    "worker": worker_id(), "pid": os.getpid(), "peak_rss": peak_rss()}


@dataclass
class PartitionRead:
    """What :func:`read_partitions` returns: ``fn``'s result per partition and the reads."""

    results: list[Any]
    reads: list[dict[str, Any]] = field(default_factory=list)


def read_partitions(engine: Engine, data: PartitionedData, fn: TableFn = _num_rows,
                    columns: Sequence[str] | None = None,
                    indices: Sequence[int] | None = None) -> PartitionRead:
    """One task per partition (``indices``: these only), each reading its own file where it
    runs and returning ``fn(table)``; ``fn`` must be a module-level function (it is pickled
    by reference) whose result is small."""
    chosen = range(len(data.partitions)) if indices is None else indices
    out = engine.map(_read_task, [(data, i, fn, columns) for i in chosen])
    return PartitionRead([r for r, _ in out], [s for _, s in out])


def _read_task_with(item: tuple[PartitionedData, int, Callable[..., Any], Sequence[str] | None],
                    *shared: Any) -> tuple[Any, dict[str, Any]]:
    data, index, fn, columns = item
    return _read_task((data, index, lambda table: fn(table, *shared), columns))


def read_partitions_with(engine: Engine, data: PartitionedData, fn: Callable[..., Any],
                         *shared: Any, columns: Sequence[str] | None = None,
                         indices: Sequence[int] | None = None) -> PartitionRead:
    """:func:`read_partitions` with ``fn(table, *shared)``: ``shared`` are handles the engine
    placed once (``Engine.put``: Ray's object store, Dask's scatter) that every task gets
    resolved, such as a training set every task needs."""
    chosen = range(len(data.partitions)) if indices is None else indices
    out = engine.map(_read_task_with, [(data, i, fn, columns) for i in chosen], *shared)
    return PartitionRead([r for r, _ in out], [s for _, s in out])


def read_frame(data: PartitionedData, index: int, columns: Sequence[str] | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """Partition ``index`` as a pandas DataFrame where this runs, with the read's figures
    (one entry of :func:`data_record`'s ``reads``): for frameworks whose tasks keep the frame
    in the cluster (a Ray task's return value, a Dask graph's key) instead of returning it."""
    return _read_task((data, index, _to_pandas, columns))


def _to_pandas(table: pa.Table) -> Any:
    return table.to_pandas()


def data_record(data: PartitionedData, reads: Sequence[dict[str, Any]],
                spilled: dict[str, int] | None = None) -> dict[str, Any]:
    """The record's ``data`` field from the reads of one run (see the module docstring)."""
    by_worker: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    rss: dict[str, int] = {}
    for r in reads:
        w = r["worker"]
        by_worker.setdefault(w, []).append(r["partition"])
        seconds[w] = seconds.get(w, 0.0) + r["seconds"]
        rss[w] = max(rss.get(w, 0), r["peak_rss"])
    return {"uri": data.uri, "partitions": sorted({r["partition"] for r in reads}),
            "partitions_by_worker": {w: sorted(set(p)) for w, p in sorted(by_worker.items())},
            "reads": len(reads),
            "bytes_read": sum(r["bytes"] for r in reads),
            "read_seconds_by_worker": dict(sorted(seconds.items())),
            "peak_rss_by_worker": dict(sorted(rss.items())), "spilled": spilled or {}}


# -- spilling -----------------------------------------------------------------------------------

def ray_spilled_bytes() -> int:
    """Bytes the Ray cluster the driver is connected to has spilled from its object stores
    since it started: the raylets' ``store_stats.spilled_bytes_total``, the figure
    ``ray memory --stats-only`` prints (ray/_private/internal_api.py, store_stats_summary)."""
    import ray
    from ray._private import internal_api

    address = ray.get_runtime_context().gcs_address
    state = internal_api.get_state_from_address(address)  # type: ignore[no-untyped-call]
    reply = internal_api.get_memory_info_reply(  # type: ignore[no-untyped-call]
        state, timeout_seconds=30.0)
    return int(reply.store_stats.spilled_bytes_total)


def _worker_spilled(dask_worker: Any) -> int:
    # distributed/spill.py SpillBuffer._spill digests ("disk-write", bytes, "bytes") into the
    # worker's cumulative digests_total, under keys ending in ("disk-write", "bytes").
    total = 0.0
    for key, value in dask_worker.digests_total.items():
        if isinstance(key, tuple) and len(key) >= 2 and key[-2:] == ("disk-write", "bytes"):
            total += value
    return int(total)


def dask_spilled_bytes(client: Any) -> int:
    """Bytes every worker of the Dask cluster has written to disk (worker spill) so far."""
    return int(sum(client.run(_worker_spilled).values()))


def spilled(engine: Engine) -> dict[str, int]:
    """The ``spilled`` figure of the engine's cluster (empty for the baseline)."""
    kind = cluster_kind(engine.framework)
    if kind == "ray":
        return {"ray_spilled_bytes": ray_spilled_bytes()}
    if kind == "dask":
        return {"dask_spilled_bytes": dask_spilled_bytes(getattr(engine, "client"))}  # noqa: B009
    return {}


# -- the libraries' own readers ---------------------------------------------------------------

def ray_dataset(data: PartitionedData, columns: Sequence[str] | None = None,
                workers: int = 1) -> Any:
    """``ray.data.read_parquet`` of the partition files (the read runs on the workers), under
    :func:`ray_read_settings`: read units of one file, one footer actor per worker node."""
    import ray.data

    fs, _ = data.filesystem()
    with ray_read_settings(largest_partition_bytes(data, columns), workers):
        ds = ray.data.read_parquet([data.path(p) for p in data.partitions], filesystem=fs)
    return ds.select_columns(list(columns)) if columns else ds


@contextmanager
def ray_read_settings(unit_bytes: int, workers: int) -> Iterator[dict[str, str]]:
    """The environment under which Ray Data's Parquet reader (datasource V2, the default in
    Ray 2.60) plans a read of partitions sized for one worker (yielded; restored after).

    ``read_parquet`` builds its file indexer and partitioner in the calling process and reads
    both settings there (ray/data/read_api.py, ``_read_datasource_v2``), so setting them around
    the call is enough, on a local cluster and on a RayJob's alike:

    * ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS`` (default 32: ray/data/_internal/datasource_v2/
      formats/parquet/footer_file_indexer.py): the pool of ``FooterReader`` actors that read
      the files' footers. They ask for no CPU to run, so all 32 start beside the read tasks,
      each a Python process of ~170 MiB: 28 of them on one 1-CPU node took it to 5.7 GiB of
      resident memory in the scaling run (docs/performance.md, section 7). One per worker node.
    * ``RAY_DATA_PARQUET_BIN_PACKING_BYTES`` (default 128 MiB: parquet_datasource_v2.py,
      ``get_file_partitioner``; ``OnlineBinPacker`` packs row groups by the uncompressed size
      of the projected columns): a read task's budget. ``unit_bytes``, the largest partition's,
      makes each file one read task, as Dask reads them (:func:`dask_one_task_per_file`)."""
    import importlib

    # footer_file_indexer also reads the variable once at import, as the default of every
    # later indexer: imported under these settings, it would keep them for every read after.
    importlib.import_module("ray.data._internal.datasource_v2.formats.parquet."
                            "footer_file_indexer")
    settings = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": str(max(1, workers)),
                "RAY_DATA_PARQUET_BIN_PACKING_BYTES": str(max(1, unit_bytes))}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield settings
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def largest_partition_bytes(data: PartitionedData, columns: Sequence[str] | None = None
                            ) -> int:
    """The largest partition's uncompressed size of ``columns`` (all without), from the
    footers: the size Ray Data's partitioner packs by (see :func:`ray_read_settings`)."""
    return max((footer_bytes(data, i, columns, uncompressed=True)
                for i in range(len(data.partitions))), default=1)


def dask_dataframe(data: PartitionedData, columns: Sequence[str] | None = None) -> Any:
    """``dask.dataframe.read_parquet`` of the partition files, one Dask partition per file
    when computed under :func:`dask_one_task_per_file`."""
    import dask.dataframe as dd

    fs, _ = data.filesystem()
    return dd.read_parquet([data.path(p) for p in data.partitions], filesystem=fs,
                           columns=list(columns) if columns else None)


def dask_one_task_per_file() -> Any:
    """The Dask config under which :func:`dask_dataframe` computes one read task per file.

    Otherwise Dask's "tune" pass merges the reads of several files into one task when only
    some columns are read (``FusedParquetIO``, sized by the projected share of the bytes and
    ``dataframe.parquet.minimum-partition-size``: dask/dataframe/dask_expr/io/parquet.py,
    ``ReadParquetPyarrowFS._fusion_compression_factor``). Such a task holds several
    partitions, more than a worker sized for one has: at 512 MiB per worker the nanny killed
    it (docs/performance.md, section 7). The pass runs only under ``optimization.tune.active``
    (dask/_expr.py, ``optimize_until``); it also picks a group-by's ``split_out`` when none is
    given."""
    import dask

    return dask.config.set({"optimization.tune.active": False})


# -- per-worker figures of the libraries that read by themselves ---------------------------------

def projected_bytes(data: PartitionedData, index: int, columns: Sequence[str] | None = None
                    ) -> int:
    """The bytes :func:`read_table` counts for partition ``index`` (the file's size, or with
    ``columns`` their chunks' compressed size), from the footer alone: what a library's own
    reader of those columns fetches, besides the footer."""
    return footer_bytes(data, index, columns)


def footer_bytes(data: PartitionedData, index: int, columns: Sequence[str] | None = None,
                 uncompressed: bool = False) -> int:
    """From partition ``index``'s footer: the compressed (or ``uncompressed``) size of the
    chunks of ``columns``; without ``columns``, the file's size (compressed) or every
    column's."""
    import pyarrow.parquet as pq

    fs, _ = data.filesystem()
    with fs.open_input_file(data.path(data.partitions[index])) as f:
        if not columns and not uncompressed:
            return int(f.size())
        return chunk_bytes(pq.ParquetFile(f).metadata, columns, uncompressed)


def task_data_record(data: PartitionedData, tasks: Sequence[dict[str, Any]], read: Sequence[int],
                     sizes: Sequence[int], spilled: dict[str, int] | None = None,
                     unavailable: dict[str, str] | None = None) -> dict[str, Any]:
    """The record's ``data`` field from a library's own read tasks (``ray.data``,
    ``dask.dataframe``, ``xgboost.dask``'s chunks), as the library's task records report them.

    ``tasks``: one per read task, ``{"worker", "partitions": [indices] | None, "seconds",
    "peak_rss": bytes | None, "peak_uss": bytes | None}``; ``read``: every partition read,
    ``sizes[i]``: partition ``read[i]``'s bytes. A task whose partitions the library does not
    report (``None``) leaves ``partitions_by_worker`` and ``bytes_read_by_worker`` null; a
    figure no task has is null; ``unavailable`` says why, per field."""
    size = dict(zip(read, sizes, strict=True))
    by_worker: dict[str, list[int]] | None = {}
    seconds: dict[str, float] = {}
    rss: dict[str, int] = {}
    uss: dict[str, int] = {}
    count: dict[str, int] = {}
    for t in tasks:
        w = t["worker"]
        count[w] = count.get(w, 0) + 1
        seconds[w] = seconds.get(w, 0.0) + float(t["seconds"])
        if t.get("peak_rss") is not None:
            rss[w] = max(rss.get(w, 0), int(t["peak_rss"]))
        if t.get("peak_uss") is not None:
            uss[w] = max(uss.get(w, 0), int(t["peak_uss"]))
        if by_worker is not None and t.get("partitions") is not None:
            by_worker.setdefault(w, []).extend(t["partitions"])
        else:
            by_worker = None
    parts = {w: sorted(set(p)) for w, p in sorted(by_worker.items())} \
        if by_worker is not None else None
    out: dict[str, Any] = {
        "uri": data.uri, "partitions": sorted(set(read)), "partitions_by_worker": parts,
        "reads": len(read), "bytes_read": int(sum(sizes)),
        "bytes_read_by_worker": {w: sum(size[i] for i in p) for w, p in parts.items()}
        if parts is not None else None,
        "read_tasks_by_worker": dict(sorted(count.items())),
        "read_seconds_by_worker": dict(sorted(seconds.items())),
        "peak_rss_by_worker": dict(sorted(rss.items())) if rss else None,
        "spilled": spilled or {}}
    if uss:
        out["peak_uss_by_worker"] = dict(sorted(uss.items()))
    if unavailable:
        out["unavailable"] = dict(unavailable)
    return out
