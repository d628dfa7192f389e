"""DataFrame: a groupby-aggregate and a full sort shuffle on a synthetic table.

The table has ``rows`` rows: an integer ``key`` (``keys`` distinct values) and two float columns.
Each run computes (1) per key: mean of ``x``, sum of ``y``, row count, and (2) the table sorted
by ``key`` (``set_index``: a shuffle that moves every row).

* ``local``: pandas (``groupby().agg``, ``sort_values``).
* ``dask`` and ``dask-on-ray``: Dask DataFrame, partitions persisted in the cluster once;
  ``groupby().agg`` (tree reduction) and ``set_index`` (distributed's p2p shuffle on ``dask``,
  the task-based shuffle under Ray's scheduler on ``dask-on-ray``).
* ``ray``: Ray core, the idiomatic Ray way: partitions in the object store; partial aggregates per
  partition combined on the driver; a sample-sort shuffle where every map task splits its
  partition into range buckets (``num_returns``) and every reduce task sorts one range.

Quality figures: the number of groups, a checksum of the aggregates, and the sorted row count
and sortedness, which every framework must reproduce exactly (checksum to 1e-9 relative).

Partitioned mode (``dataset.name: parquet``, kind ``transactions``): the table is the dataset's
``customer`` (the key), ``amount`` (x) and ``quantity`` (y) columns; ``rows``, ``keys`` and
``partitions_per_worker`` do not apply (the dataset has its own; ``seed`` seeds Ray's sample sort
only). Every run reads: one task per partition reads its own file where it runs and keeps the frame
in the cluster (a Ray task's return value in the object store; a key of the Dask graph,
``from_delayed``), and the same groupby and sort run on those frames. Dask sorts into ``set_index``
divisions spread evenly over the manifest's key range, so nothing is computed before the one
``compute`` that reads (without ``divisions`` set_index computes them at once:
dask/dataframe/dask_expr/_collection.py); Ray's sample sort samples the frames already read. The
driver gets the aggregates and summaries only (on the ``local`` baseline the threads of this
process read, and pandas works on the whole table; Dask's single-machine schedulers read on their
threads or processes here).
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from bench.data import PartitionedData, data_record, spilled
from bench.data.readers import read_frame
from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.errors import UsageError
from bench.frameworks import is_baseline

from .base import Outcome, Params, State, Tolerance, Workload, chunks


def make_table(rows: int, keys: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "key": rng.integers(0, keys, rows, dtype=np.int64),
        "x": rng.normal(0, 1, rows),
        "y": rng.random(rows),
    })


SOURCE_COLUMNS = {"customer": "key", "amount": "x", "quantity": "y"}
"""Partitioned mode: the transactions columns the table is made of, and their names here."""
META = pd.DataFrame({"key": pd.Series([], dtype="i8"), "x": pd.Series([], dtype="f8"),
                     "y": pd.Series([], dtype="f8")})


def read_part(data: PartitionedData, index: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Partition ``index`` of a transactions dataset as this workload's table, where this runs,
    with the read's figures (``bench.data.readers.data_record``)."""
    raw, stat = read_frame(data, index, list(SOURCE_COLUMNS))
    df = raw.rename(columns=SOURCE_COLUMNS)[list(META.columns)].astype(
        {"key": "i8", "x": "f8", "y": "f8"})
    return df, stat


STAT_META = pd.DataFrame({"partition": pd.Series([], dtype="i8"),
                          "bytes": pd.Series([], dtype="i8"),
                          "seconds": pd.Series([], dtype="f8"),
                          "worker": pd.Series([], dtype=object),
                          "pid": pd.Series([], dtype="i8"),
                          "peak_rss": pd.Series([], dtype="i8")})


def _stat_row(read: tuple[pd.DataFrame, dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([read[1]], columns=STAT_META.columns)


def _stat_dict(row: dict[Any, Any]) -> dict[str, Any]:
    return {"partition": int(row["partition"]), "bytes": int(row["bytes"]),
            "seconds": float(row["seconds"]), "worker": str(row["worker"]),
            "pid": int(row["pid"]), "peak_rss": int(row["peak_rss"])}


def _read_item(item: tuple[PartitionedData, int]) -> tuple[pd.DataFrame, dict[str, Any]]:
    return read_part(*item)


def key_divisions(keys: int, partitions: int) -> list[int]:
    """``set_index`` divisions spread evenly over the key range ``[0, keys)``."""
    divs = [int(d) for d in np.unique(np.linspace(0, keys - 1, partitions + 1).round())]
    return divs * 2 if len(divs) == 1 else divs


def _agg_quality(agg: pd.DataFrame) -> dict[str, float]:
    agg = agg.sort_index()
    return {
        "groups": float(len(agg)),
        "agg_checksum": float(agg["x_mean"].sum() + agg["y_sum"].sum() + agg["n"].sum()),
    }


def _sort_summary(part: pd.DataFrame | pd.Series, keys: ArrayLike) -> dict[str, Any]:
    keys = np.asarray(keys)
    return {"n": len(keys), "min": keys.min() if len(keys) else None,
            "max": keys.max() if len(keys) else None,
            "monotonic": bool(np.all(keys[1:] >= keys[:-1])) if len(keys) else True}


def _sorted_quality(parts: list[dict[str, Any]]) -> dict[str, float]:
    parts = [p for p in parts if p["n"]]
    ok = all(p["monotonic"] for p in parts) and all(
        a["max"] <= b["min"] for a, b in itertools.pairwise(parts))
    return {"sorted_rows": float(sum(p["n"] for p in parts)), "sorted": 1.0 if ok else 0.0}


def _dask_quality(ddf: Any, indexed: Any, extra: list[Any] | None = None
                  ) -> tuple[dict[str, float], list[Any]]:
    """The groupby and the sort summaries of a Dask DataFrame (and ``extra`` delayed values)
    in one ``compute``; call it inside the engine's ``dask_context``."""
    from dask.base import compute

    agg = ddf.groupby("key").agg(x_mean=("x", "mean"), y_sum=("y", "sum"), n=("x", "size"))
    summary = indexed.map_partitions(
        lambda p: pd.DataFrame([_sort_summary(p, p.index.to_numpy())]),
        meta={"n": "i8", "min": "f8", "max": "f8", "monotonic": "bool"},
    )
    agg_df, summ, *rest = compute(  # type: ignore[no-untyped-call]  # unannotated
        agg, summary, *(extra or []))
    parts = [dict(r) for r in summ.to_dict("records")]
    return _agg_quality(agg_df) | _sorted_quality(parts), rest


# -- Ray core tasks --------------------------------------------------------------------------
def partial_agg(part: pd.DataFrame) -> pd.DataFrame:
    return part.groupby("key").agg(x_sum=("x", "sum"), y_sum=("y", "sum"), n=("x", "size"))


def sample_keys(part: pd.DataFrame, per_part: int, seed: int) -> NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    k: NDArray[np.int64] = part["key"].to_numpy()
    return k[rng.integers(0, len(k), min(per_part, len(k)))] if len(k) else k


def split_by_range(part: pd.DataFrame, bounds: NDArray[np.int64]
                   ) -> tuple[pd.DataFrame, ...] | pd.DataFrame:
    idx = np.searchsorted(bounds, part["key"].to_numpy(), side="right")
    out = [part[idx == b] for b in range(len(bounds) + 1)]
    return tuple(out) if len(out) > 1 else out[0]


def sort_range(*pieces: pd.DataFrame) -> dict[str, Any]:
    df = pd.concat(pieces).sort_values("key", kind="stable")
    return _sort_summary(df, df["key"].to_numpy())


class DataFrame(Workload):
    name = "dataframe"
    quality_metric = "agg_checksum"
    tolerance: ClassVar[Tolerance] = {"groups": (0.0, 0.0), "agg_checksum": (1e-9, 1e-9),
                 "sorted_rows": (0.0, 0.0), "sorted": (0.0, 0.0)}

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        if data.kind != "transactions":
            raise UsageError(f"dataset.uri {data.uri}: dataframe needs a transactions dataset "
                             f"(testbed data make --kind transactions); this one is {data.kind}")
        return {"data": data}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        df = make_table(params["rows"], params["keys"], params["seed"])
        nparts = engine.parallelism * params["partitions_per_worker"]
        if is_baseline(engine.framework):
            return {"df": df}
        if engine.framework == "ray":
            parts = [df.iloc[lo:hi].reset_index(drop=True) for lo, hi in chunks(len(df), nparts)]
            return {"parts": [engine.put(p) for p in parts]}
        import dask.dataframe as dd

        with engine.dask_context():
            ddf = dd.from_pandas(  # type: ignore[no-untyped-call]  # dask: unannotated
                df, npartitions=nparts).persist()
            # Wait until the partitions are really in the cluster (distribute is timed alone).
            from dask.distributed import wait

            if engine.framework == "dask":
                wait(ddf)  # type: ignore[no-untyped-call]  # distributed: unannotated
        return {"ddf": ddf}

    def release(self, engine: Engine, state: State) -> None:
        state.clear()

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        if "data" not in state:
            return super().run(engine, state, params)
        data: PartitionedData = state["data"]
        indices = range(len(data.partitions))
        reads: list[dict[str, Any]]
        if is_baseline(engine.framework):
            read = engine.map(_read_item, [(data, i) for i in indices])
            reads = [r for _, r in read]
            out = self.run_local(engine, {"df": pd.concat([f for f, _ in read],
                                                          ignore_index=True)}, params)
        elif engine.framework == "ray":
            out, reads = self._ray_read(engine, data, params)
        else:
            out, reads = self._dask_read(engine, data)
        out.data = data_record(data, reads, spilled(engine))
        return out

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        df = state["df"]
        agg = df.groupby("key").agg(x_mean=("x", "mean"), y_sum=("y", "sum"), n=("x", "size"))
        s = df.sort_values("key", kind="stable")
        q = _agg_quality(agg) | _sorted_quality([_sort_summary(s, s["key"].to_numpy())])
        return Outcome(q, {"partitions": 1})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        if engine.framework == "ray":
            return self._ray(engine, state, params)
        ddf = state["ddf"]
        with engine.dask_context():
            q, _ = _dask_quality(ddf, ddf.set_index("key"))
        engine.tasks += ddf.npartitions * 4
        return Outcome(q, {"partitions": ddf.npartitions})

    def _dask_read(self, engine: Engine, data: PartitionedData
                   ) -> tuple[Outcome, list[dict[str, Any]]]:
        """Partitioned mode on the Dask schedulers: the reads are the graph's first tasks."""
        import dask.dataframe as dd
        from dask.delayed import delayed

        n = len(data.partitions)
        with engine.dask_context():
            reads = [delayed(read_part)(data, i) for i in range(n)]
            ddf = dd.from_delayed([r[0] for r in reads], meta=META, verify_meta=False)
            divisions = key_divisions(int(data.manifest["keys"]), n)
            # The reads' figures as a collection of the same kind: a compute mixing Delayed
            # values with expressions materialises the expressions first (dask/_expr.py warns).
            stats = dd.from_delayed([delayed(_stat_row)(r) for r in reads], meta=STAT_META,
                                    verify_meta=False)
            q, (rows,) = _dask_quality(ddf, ddf.set_index("key", divisions=divisions), [stats])
        engine.tasks += n * 6
        return (Outcome(q, {"partitions": n, "buckets": len(divisions) - 1}),
                [_stat_dict(r) for r in rows.to_dict("records")])

    def _ray_read(self, engine: Engine, data: PartitionedData, params: Params
                  ) -> tuple[Outcome, list[dict[str, Any]]]:
        """Partitioned mode on Ray: read tasks whose frames stay in the object store."""
        import ray

        from bench.engines.ray_engine import RayEngine

        assert isinstance(engine, RayEngine)  # run sends only "ray" here
        r_read = engine._remote(read_part).options(num_returns=2)
        pairs = [r_read.remote(data, i) for i in range(len(data.partitions))]
        engine.tasks += len(pairs)
        out = self._ray(engine, {"parts": [p[0] for p in pairs]}, params)
        return out, list(ray.get([p[1] for p in pairs]))

    def _ray(self, engine: Engine, state: State, params: Params) -> Outcome:
        import ray

        from bench.engines.ray_engine import RayEngine

        assert isinstance(engine, RayEngine)  # run_distributed sends only "ray" here
        parts = state["parts"]
        nb = len(parts)
        r_agg = engine._remote(partial_agg)
        partials = ray.get([r_agg.remote(p) for p in parts])
        total = pd.concat(partials).groupby(level=0).sum()
        agg = pd.DataFrame({"x_mean": total["x_sum"] / total["n"], "y_sum": total["y_sum"],
                            "n": total["n"]})
        # Sample sort: range boundaries from a sample, map splits, reduce sorts each range.
        r_sample = engine._remote(sample_keys)
        sample = np.sort(np.concatenate(ray.get(
            [r_sample.remote(p, 100, params["seed"] + i) for i, p in enumerate(parts)])))
        bounds = np.unique(np.quantile(sample, np.linspace(0, 1, nb + 1)[1:-1], method="lower"))
        nbuckets = len(bounds) + 1
        r_split = engine._remote(split_by_range).options(num_returns=nbuckets)
        pieces = [r_split.remote(p, bounds) for p in parts]
        if nbuckets == 1:
            pieces = [[p] for p in pieces]
        r_sort = engine._remote(sort_range)
        summaries = ray.get([r_sort.remote(*[pc[b] for pc in pieces]) for b in range(nbuckets)])
        engine.tasks += 3 * nb + nbuckets
        q = _agg_quality(agg) | _sorted_quality(summaries)
        return Outcome(q, {"partitions": nb, "buckets": nbuckets})
