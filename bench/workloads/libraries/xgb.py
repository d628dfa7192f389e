"""XGBoost: distributed gradient-boosted trees on a partitioned ``classification`` dataset,
with each framework's own integration; the same parameters and rounds everywhere.

* ``local``: ``xgboost.train`` in this process on every training partition (``nthread`` =
  the thread count): the baseline;
* ``dask``: ``xgboost.dask``: ``DaskDMatrix`` over ``dd.read_parquet`` of the training
  partitions (the workers read them), ``xgboost.dask.train`` (needs a distributed cluster:
  Dask-on-Ray and Dask's single-machine schedulers are not one);
* ``ray``: Ray Train's ``XGBoostTrainer`` (the V2 API: ``train_loop_per_worker``,
  ray/train/v2/xgboost/xgboost_trainer.py), one training worker per Ray worker, each reading
  its share of the training files itself and calling ``xgboost.train`` inside Ray Train's
  collective (``XGBoostConfig``). The files are read with pyarrow rather than Ray Data: the
  training workers hold every CPU of the cluster, which Ray Data's read tasks would wait for.
  Rank 0 hands its metrics to an actor of the driver (``.base.Inbox``) rather than with a
  checkpoint, which would need a storage path every node shares (a RayJob's pods share
  none).

The dataset's last ``test_partitions`` partitions are held out; the quality figures are the
booster's ``logloss`` and ``accuracy`` on them, equal across frameworks within a tolerance
(distributed histogram sketches differ slightly from one process's). ``train_seconds`` is
the time in training alone; ``rounds_per_second`` = rounds / train_seconds.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.data.readers import projected_bytes
from bench.engines.base import Engine
from bench.errors import RunError, UsageError
from bench.workloads.base import Outcome, Params, State, Tolerance, Workload

from .base import Inbox, family, require

if TYPE_CHECKING:
    from bench.data import PartitionedData


def booster_params(params: Params, classes: int, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"max_depth": params["max_depth"], "eta": params["eta"],
                           "max_bin": params["max_bin"], "tree_method": params["tree_method"],
                           "seed": params["seed"], "nthread": max(1, threads)}
    if classes > 2:
        out.update(objective="multi:softprob", num_class=classes, eval_metric="mlogloss")
    else:
        out.update(objective="binary:logistic", eval_metric="logloss")
    return out


def metrics(proba: np.ndarray, y: np.ndarray, classes: int) -> dict[str, float]:
    """Log loss and accuracy of predicted probabilities (binary: P(1); else one row each)."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if classes <= 2:
        p = np.stack([1 - p.reshape(-1), p.reshape(-1)], axis=1)
    p = np.clip(p, 1e-15, 1.0)
    logloss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    accuracy = float(np.mean(p.argmax(axis=1) == y))
    return {"logloss": logloss, "accuracy": accuracy}


def read_frame(data: PartitionedData, uris: list[str], features: list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of ``uris``, read with pyarrow in the calling process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = data.filesystem()
    if not uris:
        return np.zeros((0, len(features)), np.float32), np.zeros(0, np.int32)
    table = pa.concat_tables([pq.read_table(data.path(u), columns=[*features, "label"],
                                            filesystem=fs) for u in uris])
    X = np.column_stack([table[c].to_numpy() for c in features]).astype(np.float32)
    return X, table["label"].to_numpy()


def _ray_train_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: read my share, train, evaluate, report."""
    import ray.train
    import xgboost

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()  # my share: every size-th file
    data, features = config["data"], config["features"]
    mine = config["train"][rank::size]
    X, y = _timed_read(data, mine, features, config["reads"])
    t0 = time.perf_counter()
    booster = xgboost.train(config["params"], xgboost.DMatrix(X, label=y),
                            num_boost_round=config["rounds"])
    seconds = time.perf_counter() - t0
    # Every rank evaluates (each holds the same booster): making a DMatrix is a collective
    # operation inside Ray Train's communicator (it agrees on the column count), so a
    # DMatrix made on rank 0 alone would wait for the others forever.
    Xt, yt = _timed_read(data, config["test"], features, config["reads"])
    report: dict[str, Any] = {"train_seconds": seconds, "rows": len(y),
                              **metrics(booster.predict(xgboost.DMatrix(Xt)), yt,
                                        config["classes"])}
    ray.train.report(report)
    # Without a checkpoint Ray Train V2 hands the driver no metrics: rank 0 puts them in the
    # driver's inbox (a checkpoint would need storage every node shares; see .base.Inbox).
    if rank == 0:
        ray.get(config["inbox"].put.remote(report))


def _timed_read(data: PartitionedData, uris: list[str], features: list[str], queue: Any
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_frame`, and what it cost put on ``queue`` (a ``ray.util.queue.Queue``:
    Ray Train V2 keeps only rank 0's reported metrics) for the record's ``data``."""
    from bench.data.readers import peak_rss, worker_id

    t0 = time.perf_counter()
    X, y = read_frame(data, uris, features)
    index = {u: i for i, u in enumerate(data.partitions)}
    queue.put({"worker": worker_id(), "partitions": [index[u] for u in uris],
               "seconds": time.perf_counter() - t0, "peak_rss": peak_rss()})
    return X, y


def _read_part(data: PartitionedData, uri: str, features: list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    return read_frame(data, [uri], features)


def _dask_arrays(client: Any, data: PartitionedData, uris: list[str], features: list[str],
                 keys: dict[Any, list[int] | None]) -> Any:
    """Dask arrays of features and labels, one chunk per file, each read once by a worker (a
    future per file, ``da.from_delayed`` of its parts; the rows per file are the manifest's);
    each read task's key goes into ``keys`` (key → its partition), to find it in the task
    stream. (Delayed reads would be fused with their parts under other keys when the arrays'
    graph is optimized.)"""
    import dask.array as da
    from dask.delayed import delayed

    index = {u: i for i, u in enumerate(data.partitions)}
    rows = [int(data.manifest["partition_rows"][index[u]]) for u in uris]
    run = uuid.uuid4().hex[:12]
    reads = []
    for u in uris:
        key = f"xgboost-read-{run}-{index[u]}"
        keys[key] = [index[u]]
        reads.append(delayed(client.submit(_read_part, data, u, features, key=key)))
    # (dask.array is unannotated: no-untyped-call)
    xs = [da.from_delayed(  # type: ignore[no-untyped-call]
        r[0], (n, len(features)), dtype=np.float32) for r, n in zip(reads, rows, strict=True)]
    ys = [da.from_delayed(  # type: ignore[no-untyped-call]
        r[1], (n,), dtype=np.int32) for r, n in zip(reads, rows, strict=True)]
    return (da.concatenate(xs),  # type: ignore[no-untyped-call]
            da.concatenate(ys))  # type: ignore[no-untyped-call]


class Xgboost(Workload):
    name = "xgboost"
    quality_metric = "logloss"
    higher_is_better = False
    tolerance: ClassVar[Tolerance] = {"logloss": (0.03, 0.1), "accuracy": (0.03, 0.0)}

    def distribute_partitioned(self, engine: Engine, data: PartitionedData,
                               params: Params) -> State:
        if data.kind != "classification":
            raise UsageError(f"dataset.uri {data.uri}: xgboost needs a classification "
                             f"dataset (testbed data make --kind classification); this one is "
                             f"{data.kind}")
        held = params["test_partitions"]
        if held >= len(data.partitions):
            raise UsageError(f"workloads: xgboost's params.test_partitions: {held} of the "
                             f"dataset's {len(data.partitions)} partitions leaves none to "
                             "train on")
        train = data.partitions[:-held]
        if family(engine.framework) == "ray" and engine.workers > len(train):
            raise UsageError(f"workloads: xgboost on ray: {engine.workers} training workers "
                             f"but {len(train)} training partitions; each worker needs one")
        names = [f["name"] for f in data.manifest["schema"]]
        features = [n for n in names if n != "label"]
        classes = int(data.manifest.get("classes") or 2)
        # the bytes each file's read fetches (every column), for the record's data field
        sizes = [projected_bytes(data, i, [*features, "label"])
                 for i in range(len(data.partitions))]
        return {"data": data, "train": train, "test": data.partitions[-held:], "sizes": sizes,
                "features": features, "classes": classes}

    def release(self, engine: Engine, state: State) -> None:
        state.clear()

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        from bench.data.readers import spilled, task_data_record

        path = family(engine.framework)
        if path == "local":
            quality, seconds, reads = self._local(engine, state, params)
        elif path == "ray":
            quality, seconds, reads = self._ray(engine, state, params)
        else:
            quality, seconds, reads = self._dask(engine, state, params)
        data: PartitionedData = state["data"]
        read = [i for t in reads for i in t["partitions"]]
        record = task_data_record(data, reads, read, [state["sizes"][i] for i in read],
                                  spilled(engine))
        return Outcome(quality, {"train_seconds": seconds,
                                 "rounds_per_second": params["rounds"] / seconds,
                                 "rounds": params["rounds"],
                                 "train_partitions": len(state["train"]),
                                 "test_partitions": len(state["test"]),
                                 "bytes_read": data.total_bytes}, record)

    def _local(self, engine: Engine, state: State, params: Params
               ) -> tuple[dict[str, float], float, list[dict[str, Any]]]:
        from bench.data.readers import peak_rss

        xgboost = require("xgboost", "xgboost", self.name)
        t0 = time.perf_counter()
        X, y = read_frame(state["data"], state["train"], state["features"])
        read_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        booster = xgboost.train(booster_params(params, state["classes"], engine.parallelism),
                                xgboost.DMatrix(X, label=y), num_boost_round=params["rounds"])
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        Xt, yt = read_frame(state["data"], state["test"], state["features"])
        read_seconds += time.perf_counter() - t1
        n = len(state["data"].partitions)
        reads = [{"worker": "driver", "partitions": list(range(n)), "seconds": read_seconds,
                  "peak_rss": peak_rss()}]
        return metrics(booster.predict(xgboost.DMatrix(Xt)), yt, state["classes"]), seconds, \
            reads

    def _dask(self, engine: Engine, state: State, params: Params
              ) -> tuple[dict[str, float], float, list[dict[str, Any]]]:
        client = getattr(engine, "client", None)
        if engine.framework != "dask" or client is None:
            raise RunError(f"xgboost does not run on {engine.framework}: xgboost.dask needs a "
                           "distributed Dask cluster (framework dask)")
        dxgb = require("xgboost.dask", "xgboost", self.name)

        data: PartitionedData = state["data"]
        threads = max(1, int(engine.cpus_per_worker))
        # xgboost.dask checks its client against distributed.get_client(): make it current.
        from distributed import get_task_stream

        from .reads import dask_read_tasks

        keys: dict[Any, list[int] | None] = {}
        # The scheduler's task stream: which worker ran each read task, and for how long.
        with engine.dask_context(), get_task_stream(client=client) as stream:
            t0 = time.perf_counter()
            X, y = _dask_arrays(client, data, state["train"], state["features"], keys)
            dtrain = dxgb.DaskDMatrix(client, X, y)
            out = dxgb.train(client, booster_params(params, state["classes"], threads), dtrain,
                             num_boost_round=params["rounds"])
            seconds = time.perf_counter() - t0
            Xt, yt = _dask_arrays(client, data, state["test"], state["features"], keys)
            proba, labels = client.compute([dxgb.predict(client, out["booster"], Xt), yt],
                                           sync=True)
        engine.tasks += len(state["train"]) + len(state["test"])
        reads = dask_read_tasks(client, stream.data, keys)
        return metrics(np.asarray(proba), labels, state["classes"]), seconds, reads

    def _ray(self, engine: Engine, state: State, params: Params
             ) -> tuple[dict[str, float], float, list[dict[str, Any]]]:
        rx = require("ray.train.xgboost", "ray[train]", self.name)
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.util.queue import Queue

        # The training workers hold every CPU: the queue's actor needs none.
        queue = Queue(actor_options={"num_cpus": 0})

        cpus = max(1.0, engine.cpus_per_worker)
        config = {"data": state["data"], "train": state["train"], "test": state["test"],
                  "features": state["features"], "classes": state["classes"],
                  "rounds": params["rounds"], "reads": queue,
                  "params": booster_params(params, state["classes"], int(cpus))}
        # Nothing but Ray Train's own markers goes under the storage path (each node creates
        # it locally): no checkpoint is reported.
        storage = tempfile.mkdtemp(prefix="testbed-xgb-")
        inbox: Any = ray.remote(num_cpus=0)(Inbox).remote()  # (Ray's actor typing is partial)
        config["inbox"] = inbox
        try:
            trainer = rx.XGBoostTrainer(
                _ray_train_loop, train_loop_config=config,
                scaling_config=ScalingConfig(num_workers=engine.workers,
                                             resources_per_worker={"CPU": cpus}),
                run_config=RunConfig(storage_path=storage, name="xgboost"))
            trainer.fit()
            m = dict(ray.get(inbox.get.remote()) or {})
            reads: list[dict[str, Any]] = queue.get_nowait_batch(queue.qsize())
        finally:
            ray.kill(inbox)
            shutil.rmtree(storage, ignore_errors=True)
            queue.shutdown()
        if "logloss" not in m:
            raise RunError(f"xgboost on ray: the training workers reported no metrics ({m})")
        engine.tasks += engine.workers
        return {"logloss": float(m["logloss"]), "accuracy": float(m["accuracy"])}, \
            float(m["train_seconds"]), reads
