"""The training loop every rank of the ``train`` workload runs, framework-free.

One function, :func:`fit`, is the whole of a rank's work once ``torch.distributed`` is up (Ray
Train sets it up in its workers; :func:`dask_rank` does on a Dask worker), and, with
``world = 1`` and no process group, the single-process baseline.

Why the three runs do the same arithmetic: the data is a ``TensorDataset`` read through a
``DistributedSampler(num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)``
with a per-rank batch of ``batch_size / world`` rows.  The sampler draws one permutation per
epoch from ``seed + epoch`` (the same for every world size) and gives rank ``r`` the positions
``r, r + world, ...``; so the union of the ranks' k-th batches is exactly rows
``perm[k·B:(k+1)·B]``, the k-th batch of the single process with batch ``B``, and an epoch has
``⌊n / B⌋`` steps in both.  DDP averages the ranks' gradients of their mean losses, which is the
gradient of the mean loss over the global batch.  Without BatchNorm (the small CNN) a DDP step
is the baseline's step up to floating-point summation order; with it (ResNet-18) every rank
normalises its own ``B / world`` rows, and DDP evaluates with rank 0's running statistics (it
broadcasts rank 0's buffers before every forward).  Ray Train and Dask DDP, with the same world
size, run identical computations.
"""
from __future__ import annotations

import math
import socket
import time
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from bench.workloads import torchnet as tn

Config = dict[str, Any]
"""arch, width, steps, batch_size (global), lr, momentum, seed, target_accuracy, eval_every,
threads (torch threads per rank)."""


def _inner(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner


def fit(cfg: Config, data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], rank: int,
        world: int, wrap_model: Any = None, wrap_loader: Any = None) -> dict[str, Any]:
    """Train ``cfg["steps"]`` SGD steps as rank ``rank`` of ``world``; rank 0 scores the test set
    every ``eval_every`` steps and at the end.  ``wrap_model``/``wrap_loader``: how this
    framework makes the model data-parallel and the loader distributed (Ray Train's
    ``prepare_model``/``prepare_data_loader``; DDP for Dask).  Returns rank 0's figures:
    accuracy, loss, train seconds (evaluation excluded), samples/s, seconds to the target
    accuracy (None if not reached), and the accuracy at each evaluation."""
    torch.set_num_threads(max(1, int(cfg["threads"])))
    X, y, X_test, y_test = data
    model = tn.build_model(cfg["arch"], int(cfg["width"]), int(cfg["seed"]))
    if wrap_model is not None:
        model = wrap_model(model)
    ds = TensorDataset(tn.prep(X), tn.labels(y))
    sampler: DistributedSampler[Any] = DistributedSampler(
        ds, num_replicas=world, rank=rank, shuffle=True, seed=int(cfg["seed"]), drop_last=True)
    loader: Any = DataLoader(ds, batch_size=int(cfg["batch_size"]) // world, sampler=sampler,
                             drop_last=True)
    if wrap_loader is not None:
        loader = wrap_loader(loader)
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]),
                          momentum=float(cfg["momentum"]))
    steps, every = int(cfg["steps"]), int(cfg["eval_every"])
    step, epoch, train_s, loss_v = 0, 0, 0.0, math.nan
    to_target: float | None = None
    curve: list[tuple[int, float]] = []
    while step < steps:
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            t0 = time.perf_counter()
            model.train()
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            opt.step()
            train_s += time.perf_counter() - t0
            step += 1
            loss_v = float(loss.detach())
            if rank == 0 and (step % every == 0 or step == steps):
                _, acc = tn.evaluate(_inner(model), X_test, y_test)
                curve.append((step, acc))
                if to_target is None and acc >= float(cfg["target_accuracy"]):
                    to_target = train_s
            if step == steps:
                break
        epoch += 1
    if world > 1:  # the last step's loss over the global batch, as the baseline's
        last = torch.tensor([loss_v])
        torch.distributed.all_reduce(last)
        loss_v = float(last[0]) / world
    acc = curve[-1][1] if curve else math.nan
    return {"accuracy": acc, "loss": loss_v, "train_s": train_s,
            "samples_per_s": steps * int(cfg["batch_size"]) / max(train_s, 1e-9),
            "time_to_target_s": to_target, "curve": curve, "epochs": epoch,
            "params": tn.param_count(_inner(model)), "world": world}


def free_port() -> int:
    """A free TCP port on this host (run on the rank-0 worker: its store listens there)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def dask_rank(cfg: Config, rank: int, world: int, master: str, port: int, X: np.ndarray,
              y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """A Dask task, one pinned to each worker: join the gloo process group whose TCP store
    rank 0 serves at ``master:port``, train as rank ``rank`` with torch's own DDP, leave the
    group (the worker process lives on and may run the next trial's group)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=cfg["timeout_s"]))
    try:
        return fit(cfg, (X, y, X_test, y_test), rank, world,
                   wrap_model=DistributedDataParallel)
    finally:
        dist.destroy_process_group()


def ray_loop(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: Ray Train has started the gloo group
    (``TorchConfig(backend="gloo")``); the model and loader go through its ``prepare_*``."""
    import ray
    import ray.train
    import ray.train.torch as rtt

    ctx = ray.train.get_context()
    data = tuple(ray.get(config["data"]))
    out = fit(config["cfg"], data, ctx.get_world_rank(), ctx.get_world_size(),
              wrap_model=rtt.prepare_model,
              wrap_loader=lambda loader: rtt.prepare_data_loader(loader, move_to_device=False))
    out["curve"] = [list(p) for p in out["curve"]]
    ray.train.report(out)
    # Ray Train 2.x (Train V2) hands the driver only metrics reported with a checkpoint
    # (ray/train/v2/api/result.py, Result._from_checkpoint_manager), and a checkpoint needs a
    # storage path every node shares (ray/train/v2/_internal/execution/storage.py,
    # persist_current_checkpoint): a RayJob's pods share none.  Rank 0 hands its figures to
    # the driver's inbox actor instead.
    if ctx.get_world_rank() == 0:
        ray.get(config["inbox"].put.remote(out))
