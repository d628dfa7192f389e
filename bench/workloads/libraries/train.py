"""``train``: real data-parallel training of ResNet-18 or the small CNN on digits images.

Ray: Ray Train's ``TorchTrainer`` (DDP over gloo, ``prepare_model``/``prepare_data_loader``),
one training worker per cluster worker.  Dask: torch's own ``DistributedDataParallel`` started on
the Dask workers, one task pinned to each worker (``workers=``, no stealing); the rank-0 worker's
host, from the scheduler's worker list, serves the gloo TCP store, so nothing assumes the
cluster is on this machine.  Local baseline: one process, the same global batch and steps.
Same model, seed, global batch, steps and batches in all three: see :mod:`.ddp` for why the
runs compute the same updates.

Figures: final test accuracy (quality), samples/s of the training steps (evaluation excluded),
seconds of training until rank 0's test accuracy first reached ``target_accuracy`` (checked every
``eval_every`` steps), and the start-up seconds of the framework's training machinery
(``setup_s``: Ray Train's controller and worker group; Dask's process-group rendezvous).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar
from urllib.parse import urlparse

from bench.datasets import Dataset
from bench.engines.base import Engine
from bench.errors import RunError
from bench.frameworks import is_baseline
from bench.workloads.base import Outcome, Params, State, Tolerance, Workload

from .base import dask_client, dispatch, require, scratch_dir

TIMEOUT_S = 600  # gloo rendezvous and collectives: fail a wedged rank instead of hanging


def _config(engine: Engine, params: Params, world: int) -> dict[str, Any]:
    if params["batch_size"] % world:
        raise RunError(f"params.batch_size: {params['batch_size']} is not divisible by the "
                       f"{world} worker(s); the global batch is split evenly between ranks")
    return {**params, "threads": max(1, int(engine.cpus_per_worker)), "timeout_s": TIMEOUT_S}


class Train(Workload):
    name = "train"
    quality_metric = "accuracy"
    # DDP on W ranks normalises BatchNorm per rank (ResNet-18), the baseline over the whole
    # batch: a few points of accuracy after a short run; without BatchNorm (cnn) the runs agree
    # up to summation order.  Ray Train and Dask DDP (same W) agree with each other closely.
    tolerance: ClassVar[Tolerance] = {"accuracy": (0.1, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        arrays = (data.X_train, data.y_train, data.X_test, data.y_test)
        if is_baseline(engine.framework):
            return {"data": arrays}
        return {"handles": [engine.put(a) for a in arrays]}

    def release(self, engine: Engine, state: State) -> None:
        for h in state.get("handles", []):
            engine.release(h)

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        from .ddp import fit

        cfg = {**_config(engine, params, 1), "threads": max(1, engine.parallelism)}
        return _outcome(fit(cfg, state["data"], 0, 1), 0.0)

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        return dispatch(self.name, engine, state, params, ray=("Ray Train", _ray),
                        dask=("DDP on the workers", _dask))


def _outcome(out: dict[str, Any], setup_s: float) -> Outcome:
    return Outcome({"accuracy": float(out["accuracy"]), "loss": float(out["loss"])},
                   {"samples_per_s": out["samples_per_s"], "train_s": out["train_s"],
                    "time_to_target_s": out["time_to_target_s"], "setup_s": setup_s,
                    "curve": [list(p) for p in out["curve"]], "epochs": out["epochs"],
                    "params": out["params"], "world": out["world"]})


def _ray(engine: Engine, state: State, params: Params) -> Outcome:
    require("ray.train.torch", "ray[train]", "train on ray")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .base import Inbox
    from .ddp import ray_loop

    world = engine.workers
    cfg = _config(engine, params, world)
    # One training worker per node, each with the smallest node's CPUs: a cluster we connected
    # to (a RayJob's) may have a head with CPUs or nodes of unequal size, whose average
    # (engine.cpus_per_worker) would not fit on every node.
    cpus = min((n["Resources"].get("CPU", 0) for n in ray.nodes()  # type: ignore[no-untyped-call]
                if n.get("Alive") and n["Resources"].get("CPU", 0) > 0),
               default=engine.cpus_per_worker)
    # No checkpoint is reported (see ddp.ray_loop), so nothing is written under the storage
    # path but Ray Train's own markers; each node creates the directory locally.
    t0 = time.perf_counter()
    inbox: Any = ray.remote(num_cpus=0)(Inbox).remote()  # (Ray's actor typing is partial)
    try:
        with scratch_dir("tb-train-") as storage:
            trainer = TorchTrainer(
                ray_loop,
                train_loop_config={"cfg": cfg, "data": state["handles"], "inbox": inbox},
                torch_config=TorchConfig(backend="gloo", timeout_s=TIMEOUT_S),
                scaling_config=ScalingConfig(num_workers=world, use_gpu=False,
                                             resources_per_worker={"CPU": cpus},
                                             placement_strategy="SPREAD"),
                run_config=RunConfig(name=f"train-{uuid.uuid4().hex[:8]}",
                                     storage_path=storage))
            result = trainer.fit()
        out: dict[str, Any] | None = ray.get(inbox.get.remote())
    finally:
        ray.kill(inbox)
    wall = time.perf_counter() - t0
    if out is None:
        raise RunError(f"train on ray: rank 0 reported nothing ({result.error!r})")
    engine.tasks += world
    return _outcome(out, max(0.0, wall - float(out["train_s"])))


def _dask(engine: Engine, state: State, params: Params) -> Outcome:
    require("torch.distributed", "torch", "train on dask")
    from .ddp import dask_rank, free_port

    client = dask_client(engine, "train on dask")
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])[: engine.workers]
    world = len(workers)
    cfg = _config(engine, params, world)
    # The rank-0 worker serves the rendezvous on its own host (the address the scheduler knows
    # it by, reachable from every other worker), on a port it found free itself.
    master = urlparse(workers[0]).hostname or "127.0.0.1"
    t0 = time.perf_counter()
    port = client.run(free_port, workers=[workers[0]])[workers[0]]
    run = uuid.uuid4().hex[:8]
    futures = [client.submit(dask_rank, cfg, rank, world, master, port, *state["handles"],
                             key=f"ddp-{run}-{rank}", workers=[w], allow_other_workers=False,
                             pure=False, retries=0)
               for rank, w in enumerate(workers)]
    results = client.gather(futures)
    wall = time.perf_counter() - t0
    engine.tasks += world
    out = results[0]
    return _outcome(out, max(0.0, wall - float(out["train_s"])))
