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
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.frameworks import is_baseline

from .base import Outcome, Params, State, Tolerance, Workload, chunks


def make_table(rows: int, keys: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "key": rng.integers(0, keys, rows, dtype=np.int64),
        "x": rng.normal(0, 1, rows),
        "y": rng.random(rows),
    })


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

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        df = state["df"]
        agg = df.groupby("key").agg(x_mean=("x", "mean"), y_sum=("y", "sum"), n=("x", "size"))
        s = df.sort_values("key", kind="stable")
        q = _agg_quality(agg) | _sorted_quality([_sort_summary(s, s["key"].to_numpy())])
        return Outcome(q, {"partitions": 1})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        if engine.framework == "ray":
            return self._ray(engine, state, params)
        from dask.base import compute

        ddf = state["ddf"]
        with engine.dask_context():
            agg = ddf.groupby("key").agg(x_mean=("x", "mean"), y_sum=("y", "sum"), n=("x", "size"))
            s = ddf.set_index("key")
            summary = s.map_partitions(
                lambda p: pd.DataFrame([_sort_summary(p, p.index.to_numpy())]),
                meta={"n": "i8", "min": "f8", "max": "f8", "monotonic": "bool"},
            )
            agg_df, summ = compute(agg, summary)  # type: ignore[no-untyped-call]  # unannotated
        parts = [dict(r) for r in summ.to_dict("records")]
        q = _agg_quality(agg_df) | _sorted_quality(parts)
        engine.tasks += ddf.npartitions * 4
        return Outcome(q, {"partitions": ddf.npartitions})

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
