"""ETL: read a partitioned ``transactions`` table, filter, aggregate per customer, join the
customers dimension table, sort by customer and write Parquet, with each framework's own
dataframe library.

The pipeline, the same everywhere::

    transactions[amount > min_amount]                                         (filter)
      .groupby(customer): total = sum(amount), items = sum(quantity),
                          orders = count                                      (aggregate)
      ⋈ customers on customer (inner): + region, segment                      (join)
      sorted by customer                                                      (sort shuffle)
      → Parquet files under ``output``                                        (write)

* ``local``: pandas over pyarrow, one process: the baseline every checksum must equal;
* ``ray``: Ray Data (``read_parquet``, one read task per file and one footer actor per node
  under :func:`bench.data.readers.ray_read_settings` → ``filter(expr=)`` → ``groupby().aggregate`` →
  a broadcast join in ``map_batches`` → ``sort`` → ``write_parquet``), blocks read by the
  workers (``Dataset.join`` needs polars, which the libraries extra does not carry);
* ``dask``, ``dask-on-ray``, ``dask-threads``/``-processes``/``-synchronous``: the same Dask
  DataFrame graph (``read_parquet`` → mask → ``groupby().agg(split_out=)`` → ``merge`` →
  ``sort_values`` → ``to_parquet``), on the engine's Dask scheduler.

Quality figures, exact integers, equal on every framework: ``agg_rows`` and
``agg_checksum`` of the aggregate, and ``out_rows``, ``out_checksum`` and ``sorted`` of the
files written, read back one file at a time. A checksum is Σ w(customer) · v(row) mod
2³¹−1, where v combines the row's total in whole cents (the amounts are cents: a float
sum's rounding error is far below half a cent), items and orders (and, in the output, a
CRC-32 of region and segment), and w is a hash of the key: it does not depend on the order
of rows or on how they are partitioned, and a value moved to another key changes it.
``sorted``: every file is sorted and the files' key ranges do not overlap.

``stages: true`` materializes after each operation (Ray Data ``materialize``, Dask
``persist`` and ``wait``, pandas as it goes) and records each one's seconds in
``extra.stage_seconds`` (read, filter, aggregate, join, sort, write): Ray Data vs Dask
DataFrame per operation. The fused pipeline, where each library overlaps and fuses the
operations, stays the headline figure. A staged run also fills the record's ``data`` per worker
from the read's own tasks (:mod:`.reads`); a fused one reads in the tasks that also filter and
aggregate, and says so in ``data.unavailable``.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from bench.data.readers import peak_rss, projected_bytes
from bench.engines.base import Engine
from bench.errors import UsageError
from bench.workloads.base import Outcome, Params, State, Tolerance, Workload

from .base import family, require
from .stages import Laps, dask_keep

if TYPE_CHECKING:
    from bench.data import PartitionedData

COLUMNS = ["customer", "amount", "quantity"]
OUTPUT_COLUMNS = ["customer", "total", "items", "orders", "region", "segment"]
MOD = 2**31 - 1


# -- checksums (module-level: they run on the workers) ----------------------------------------
def _weights(customer: np.ndarray) -> np.ndarray:
    c = np.asarray(customer).astype(np.int64) % MOD
    result: np.ndarray = (c * 48271) % MOD + 1
    return result


def _crc(values: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(values.astype(str))
    table = np.array([zlib.crc32(str(u).encode()) for u in uniques], dtype=np.int64)
    result: np.ndarray = table[codes] if len(table) else np.zeros(0, np.int64)
    return result


def frame_checksum(df: pd.DataFrame) -> pd.DataFrame:
    """One row: ``rows`` and ``checksum`` of ``df`` (see the module docstring)."""
    cents = np.round(df["total"].to_numpy(np.float64) * 100).astype(np.int64)
    value = (cents % MOD + 1_000_003 * df["items"].to_numpy(np.int64)
             + 999_983 * df["orders"].to_numpy(np.int64)) % MOD
    if "region" in df.columns:
        value = (value + _crc(df["region"]) + 7 * _crc(df["segment"])) % MOD
    total = int(((value * _weights(df["customer"].to_numpy())) % MOD).sum()) % MOD
    return pd.DataFrame({"rows": [len(df)], "checksum": [total]})


def _combine(parts: pd.DataFrame) -> tuple[int, int]:
    return int(parts["rows"].sum()), int(parts["checksum"].astype(object).sum()) % MOD


# -- the pipeline, once per library -------------------------------------------------------------
def _local(data: PartitionedData, params: Params, fs: Any, out: str, nparts: int,
           lap: Laps) -> pd.DataFrame:
    import pyarrow.parquet as pq

    tables = [pq.read_table(data.path(p), columns=COLUMNS, filesystem=fs)
              for p in data.partitions]
    df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    del tables
    lap("read")
    df = df[df["amount"] > params["min_amount"]]
    lap("filter")
    agg = df.groupby("customer").agg(total=("amount", "sum"), items=("quantity", "sum"),
                                     orders=("amount", "count")).reset_index()
    lap("aggregate")
    dim = pq.read_table(data.path(_dimension(data)), filesystem=fs).to_pandas()
    joined = agg.merge(dim, on="customer", how="inner")
    lap("join")
    joined = joined.sort_values("customer", kind="stable")
    lap("sort")
    fs.create_dir(out, recursive=True)
    for i, (lo, hi) in enumerate(_bounds(len(joined), nparts)):
        part = joined.iloc[lo:hi]
        pq.write_table(_to_arrow(part), f"{out}/part-{i:05d}.parquet", filesystem=fs)
    lap("write")
    return frame_checksum(agg)


def _to_arrow(df: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)


def _bounds(n: int, parts: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, max(1, min(parts, n)) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _dask(engine: Engine, data: PartitionedData, params: Params, fs: Any, out: str,
          nparts: int, lap: Laps, reads: dict[str, Any]) -> pd.DataFrame:
    from dask.base import compute

    from bench.data.readers import dask_one_task_per_file

    dd = require("dask.dataframe", "dask[dataframe]", "etl")
    keep = dask_keep(lap)
    # One Dask partition per file (see dask_one_task_per_file): a worker is sized for one.
    with engine.dask_context(), dask_one_task_per_file():
        tx = _dask_read(engine, data, lap.on, reads)
        if "lap" in reads:
            lap.set("read", reads.pop("lap"))
        else:
            lap("read")
        tx = keep(tx[tx["amount"] > params["min_amount"]])
        lap("filter")
        agg = keep(tx.groupby("customer").agg(total=("amount", "sum"), items=("quantity", "sum"),
                                              orders=("amount", "count"),
                                              split_out=nparts).reset_index())
        lap("aggregate")
        dim = dd.read_parquet(data.path(_dimension(data)), filesystem=fs)
        joined = keep(agg.merge(dim, on="customer", how="inner"))
        lap("join")
        ordered = keep(joined.sort_values("customer", npartitions=nparts))
        lap("sort")
        write = ordered.to_parquet(out, filesystem=fs, write_index=False, compute=False)
        sums = agg.map_partitions(frame_checksum, meta={"rows": "i8", "checksum": "i8"})
        # dask.base.compute is unannotated
        if lap.on:
            compute(write)  # type: ignore[no-untyped-call]
            lap("write")
            (parts,) = compute(sums)  # type: ignore[no-untyped-call]
        else:
            parts, _ = compute(sums, write)  # type: ignore[no-untyped-call]
    engine.tasks += tx.npartitions * 6
    result: pd.DataFrame = parts
    return result


def _dask_read(engine: Engine, data: PartitionedData, staged: bool, reads: dict[str, Any]
               ) -> Any:
    """The transactions read. Staged, its partitions are persisted as delayed objects and
    made a DataFrame again (``from_delayed``): persisting the DataFrame itself loses
    partitions when Dask fuses the read of small files (``FusedParquetIO``: the persisted keys
    are the fused ones, the collection expects one per file; dask 2026.8), while
    ``to_delayed`` gives one read task per file. On a distributed cluster the read runs under
    the scheduler's task stream, whose read tasks give ``reads["tasks"]``, and the read's
    seconds ``reads["lap"]`` (the stream's fetch after it is no operation's time)."""
    import dask.dataframe as dd
    from dask.base import persist
    from distributed import futures_of, get_task_stream, wait

    from bench.data.readers import dask_dataframe

    from .reads import dask_read_keys, dask_read_tasks

    tx = dask_dataframe(data, COLUMNS)
    if not staged:
        return tx
    parts = tx.to_delayed()
    client = getattr(engine, "client", None)
    stream = get_task_stream(client=client) if engine.framework == "dask" and client \
        else nullcontext()
    t0 = time.perf_counter()
    with stream as ts:
        done = persist(*parts)  # type: ignore[no-untyped-call]  # (dask: unannotated)
        futures = futures_of(done)  # type: ignore[no-untyped-call]
        if futures:
            wait(futures)  # type: ignore[no-untyped-call]
        reads["lap"] = time.perf_counter() - t0
    if ts is not None:
        reads["tasks"] = dask_read_tasks(client, ts.data, dask_read_keys(parts,
                                                                         len(data.partitions)))
    return dd.from_delayed(list(done), meta=tx._meta, verify_meta=False)


@contextmanager
def _ray_context(shuffle: str | None) -> Iterator[str]:
    """Ray Data's shuffle strategy for the run (``shuffle``, or Ray Data's default when
    None; yielded), restored afterwards: the DataContext is the driver process's."""
    ctx = require("ray.data", "ray[data]", "etl").DataContext.get_current()
    before = ctx.shuffle_strategy
    if shuffle is not None:
        ctx.shuffle_strategy = shuffle
    try:
        yield str(ctx.shuffle_strategy.value)
    finally:
        ctx.shuffle_strategy = before


def _ray_checksum(batch: pd.DataFrame) -> pd.DataFrame:
    return frame_checksum(batch)


def _ray(data: PartitionedData, params: Params, fs: Any, out: str, nparts: int, lap: Laps,
         reads: dict[str, Any], workers: int) -> pd.DataFrame:
    from bench.data.readers import ray_dataset

    rd = require("ray.data", "ray[data]", "etl")
    from ray.data.aggregate import Count, Sum

    from .reads import ray_data_read_tasks

    rd.DataContext.get_current().enable_progress_bars = False
    # Ray Data logs every Dataset's plan and finish at INFO on the console
    # (ray/data/_internal/logging.py); the run's own output is the trial lines.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    from ray.data.expressions import col

    def keep(ds: Any) -> Any:
        return ds.materialize() if lap.on else ds

    read = keep(ray_dataset(data, COLUMNS, workers))
    lap("read")
    tx = keep(read.filter(expr=col("amount") > float(params["min_amount"])))
    lap("filter")
    agg = tx.groupby("customer", num_partitions=nparts).aggregate(
        Sum("amount", alias_name="total"), Sum("quantity", alias_name="items"),
        Count(alias_name="orders")).materialize()
    lap("aggregate")
    sums = pd.DataFrame(agg.map_batches(_ray_checksum, batch_format="pandas").take_all())
    if lap.on:
        # the read ran alone, in its own Dataset: its tasks are the read's only
        reads["tasks"] = ray_data_read_tasks(read)
    lap.skip()
    import pyarrow.parquet as pq
    import ray

    # A broadcast hash join: Dataset.join needs polars (ray/data/_internal/execution/
    # operators/join.py, _require_polars), which the libraries extra does not carry; the
    # customers table is one small file, as Dask's merge broadcasts a one-partition side.
    dim = ray.put(pq.read_table(data.path(_dimension(data)), filesystem=data.filesystem()[0]
                                ).to_pandas())
    joined = keep(agg.map_batches(_join_batch, batch_format="pandas", fn_args=(dim,)))
    lap("join")
    # Ray's sort range-partitions its input into as many blocks as it gets, each block one
    # sorted key range: nparts blocks in, nparts sorted files out. (A repartition after the
    # sort merged blocks out of order: the written files were not sorted at 2 workers.)
    ordered = keep(joined.repartition(nparts).sort("customer"))
    lap("sort")
    ordered.write_parquet(out, filesystem=fs)
    lap("write")
    return sums


def _join_batch(batch: pd.DataFrame, dim: Any) -> pd.DataFrame:
    import ray

    table: pd.DataFrame = ray.get(dim)  # from the local object store after the first batch
    return batch.merge(table, on="customer", how="inner")


def _dimension(data: PartitionedData) -> str:
    if not data.dimension_uri:
        raise UsageError(f"dataset.uri {data.uri}: no customers/part-00000.parquet (the "
                         "transactions dataset's dimension table)")
    return data.dimension_uri


# -- reading back what was written ----------------------------------------------------------------
def _file_summary(df: pd.DataFrame) -> dict[str, Any]:
    keys = df["customer"].to_numpy()
    return {"n": len(keys), "min": keys.min() if len(keys) else None,
            "max": keys.max() if len(keys) else None,
            "monotonic": bool(np.all(keys[1:] >= keys[:-1])) if len(keys) else True}


def verify_output(fs: Any, out: str) -> dict[str, float]:
    """Read the written files back one at a time (only each file's summary is kept)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(out, recursive=True))
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    rows, checksum, summaries = 0, 0, []
    for path in files:
        df = pq.read_table(path, columns=OUTPUT_COLUMNS, filesystem=fs).to_pandas()
        part = frame_checksum(df)
        rows += int(part["rows"].iloc[0])
        checksum = (checksum + int(part["checksum"].iloc[0])) % MOD
        summaries.append(_file_summary(df))
    nonempty = sorted((s for s in summaries if s["n"]), key=lambda s: s["min"])
    ordered = all(s["monotonic"] for s in nonempty) and all(
        a["max"] <= b["min"] for a, b in itertools.pairwise(nonempty))
    return {"out_rows": float(rows), "out_checksum": float(checksum),
            "sorted": 1.0 if ordered else 0.0, "out_files": float(len(files))}


class Etl(Workload):
    name = "etl"
    quality_metric = "out_checksum"
    tolerance: ClassVar[Tolerance] = dict.fromkeys(
        ("agg_rows", "agg_checksum", "out_rows", "out_checksum", "sorted"), (0.0, 0.0))

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        if data.kind != "transactions":
            raise UsageError(f"dataset.uri {data.uri}: etl needs a transactions dataset "
                             f"(testbed data make --kind transactions); this one is {data.kind}")
        _dimension(data)
        # the bytes a projected read of each file fetches, for the record's data field
        sizes = [projected_bytes(data, i, COLUMNS) for i in range(len(data.partitions))]
        if params["output"] is None and not engine.started_cluster and engine.address:
            raise UsageError("workloads: etl's params.output: a cluster this run did not start "
                             "need not share this machine's disk; give an s3:// prefix")
        return {"data": data, "sizes": sizes}

    def release(self, engine: Engine, state: State) -> None:
        state.clear()

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        from bench.data import filesystem_for

        data: PartitionedData = state["data"]
        root = params["output"]
        scratch = None
        if root is None:
            scratch = root = tempfile.mkdtemp(prefix="testbed-etl-")
        out_uri = f"{root.rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
        fs, out = filesystem_for(out_uri, data.s3)
        nparts = params["output_partitions"] or engine.parallelism
        path = family(engine.framework)
        lap, reads = Laps(params["stages"]), {}
        strategy: str | None = None
        try:
            t0 = time.perf_counter()
            lap.skip()
            if path == "local":
                parts = _local(data, params, data.filesystem()[0], out, nparts, lap)
                if lap.on:
                    reads["tasks"] = [{"worker": "driver", "seconds": lap.seconds["read"],
                                       "partitions": list(range(len(data.partitions))),
                                       "peak_rss": peak_rss()}]
            elif path == "ray":
                with _ray_context(params["ray_shuffle"]) as strategy:
                    parts = _ray(data, params, fs, out, nparts, lap, reads, engine.workers)
            else:
                parts = _dask(engine, data, params, fs, out, nparts, lap, reads)
            pipeline = time.perf_counter() - t0
            agg_rows, agg_sum = _combine(parts)
            t1 = time.perf_counter()
            quality = {"agg_rows": float(agg_rows), "agg_checksum": float(agg_sum),
                       **verify_output(fs, out)}
            verify = time.perf_counter() - t1
        finally:
            if not params["keep_output"]:
                _remove(fs, out)
            if scratch is not None and not params["keep_output"]:
                shutil.rmtree(scratch, ignore_errors=True)
        rows = int(data.manifest["rows"])
        extra = {"pipeline_seconds": pipeline, "verify_seconds": verify, "input_rows": rows,
                 "bytes_read": data.total_bytes, "rows_per_second": rows / pipeline,
                 "bytes_per_second": data.total_bytes / pipeline,
                 "output": out_uri if params["keep_output"] else None,
                 "output_partitions": nparts,
                 "ray_shuffle": strategy}
        if lap.on:
            extra["stage_seconds"] = dict(lap.seconds)
        return Outcome(quality, extra, _data_field(engine, state, path, reads.get("tasks"),
                                                     lap.on))


def _data_field(engine: Engine, state: State, path: str,
                tasks: list[dict[str, Any]] | None, staged: bool) -> dict[str, Any]:
    """The record's ``data``: every partition read once, each worker's share from the
    library's own read tasks (see :mod:`.reads`) where a staged run has them; null figures
    say why in ``unavailable``."""
    from bench.data.readers import spilled, task_data_record

    from .reads import RAY_DATA_FILES, RAY_DATA_RSS

    data: PartitionedData = state["data"]
    unavailable: dict[str, str] = {}
    if tasks is None:
        unavailable["per_worker"] = (
            "the fused pipeline reads in the tasks that also filter and aggregate (Dask's "
            "blockwise fusion, Ray Data's operator fusion): params.stages times the read alone"
            if not staged else
            "Dask's single-machine schedulers and Dask-on-Ray keep no task stream")
    elif path == "ray":
        unavailable = {"partitions_by_worker": RAY_DATA_FILES,
                       "bytes_read_by_worker": RAY_DATA_FILES, "peak_rss_by_worker": RAY_DATA_RSS}
    out = task_data_record(data, tasks or [], list(range(len(data.partitions))), state["sizes"],
                           spilled(engine), unavailable)
    if tasks is None:
        out.update(dict.fromkeys(("partitions_by_worker", "bytes_read_by_worker",
                                  "read_tasks_by_worker", "read_seconds_by_worker"), None))
    return out


def _remove(fs: Any, path: str) -> None:
    try:
        fs.delete_dir(path)
    except (OSError, FileNotFoundError):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
