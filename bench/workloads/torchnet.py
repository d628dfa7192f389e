"""Shared torch pieces of the ``cnn`` and ``resnet18`` workloads.

* the models: a small CNN and a plain-torch ResNet-18, both for 1×8×8 digits images;
* input preparation (``(n, 64)`` pixel values 0..16 → ``(n, 1, 8, 8)`` float32 in [0, 1]);
* weights as a list of numpy arrays in ``state_dict`` order (BatchNorm running statistics and
  counters included) and their sample-weighted average;
* :func:`train_shard`, the task every worker runs in a round of local SGD, and
  :func:`eval_chunk`, the task that scores a slice of the test set.

Everything here is deterministic given its inputs: models are initialised after
``torch.manual_seed``, mini-batches are drawn by a numpy ``Generator`` seeded from
(seed, round, shard), and the optimiser is plain SGD (no momentum, whose state could not be
shared between rounds without shipping it too).  Functions shipped to workers are module-level.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from .base import chunks

N_CLASSES = 10
SIDE = 8


# -- models ---------------------------------------------------------------------------------
class SmallCnn(nn.Module):
    """conv 1→16, conv 16→32, max-pool 2, linear 512→64→10."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        out: torch.Tensor = self.fc2(x)
        return out


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) for 1×8×8 input.

    The ImageNet stem (7×7 stride-2 conv + max-pool) would reduce 8×8 to 2×2 before the first
    stage, so it is replaced by a 3×3 stride-1 conv: spatial size 8 → 8 → 4 → 2 → 1 through the
    four stages.  ``width`` is the first stage's channel count (64: the real ResNet-18,
    about 11.17M parameters with 10 classes).
    """

    def __init__(self, width: int = 64, n_classes: int = N_CLASSES, in_channels: int = 1,
                 bn_momentum: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        in_planes = width
        for i, blocks in enumerate([2, 2, 2, 2]):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                # Cumulative running statistics instead of an exponential average: the
                # benchmark trains for a few dozen steps only, after which momentum 0.1 would
                # still carry a large share of the initial (0, 1) statistics into evaluation.
                m.momentum = bn_momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return out


def build_model(arch: str, width: int = 64, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the same (arch, width, seed) gives identical weights."""
    torch.manual_seed(seed)
    if arch == "cnn":
        return SmallCnn()
    if arch == "resnet18":
        return ResNet18(width)
    raise ValueError(f"unknown architecture {arch!r}; expected 'cnn' or 'resnet18'")


def param_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# -- data -----------------------------------------------------------------------------------
def prep(X: np.ndarray) -> torch.Tensor:
    """(n, 64) digits pixels (0..16) → (n, 1, 8, 8) float32 scaled to [0, 1]."""
    X = np.asarray(X)
    return torch.from_numpy((X.reshape(len(X), 1, SIDE, SIDE) / 16.0).astype(np.float32))


def labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y).astype(np.int64))


# -- weights --------------------------------------------------------------------------------
# Weights travel either as a list of numpy arrays in ``state_dict`` order or, between the driver
# and the workers, packed into one flat float32 vector: a single buffer is one object for
# ``engine.put`` (Dask's scatter would split a list into one future per array) and is
# serialised zero-copy by both frameworks.  BatchNorm's integer ``num_batches_tracked`` counters
# ride along as exact float32 integers.
def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Every ``state_dict`` entry (parameters and buffers) as a numpy copy, in order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray] | np.ndarray) -> None:
    """Load a weight list (``get_weights``' order) or a flat vector (``get_flat``)."""
    state = model.state_dict()
    with torch.no_grad():
        if isinstance(weights, np.ndarray):
            total = sum(t.numel() for t in state.values())
            if weights.ndim != 1 or weights.size != total:
                raise ValueError(f"expected a flat vector of {total} values, got shape "
                                 f"{weights.shape}")
            pos = 0
            for t in state.values():
                k = t.numel()
                t.copy_(torch.from_numpy(weights[pos:pos + k]).view(t.shape))
                pos += k
            return
        if len(weights) != len(state):
            raise ValueError(f"expected {len(state)} weight arrays, got {len(weights)}")
        for (name, t), w in zip(state.items(), weights, strict=True):
            if tuple(t.shape) != tuple(np.shape(w)):
                raise ValueError(f"{name}: shape {np.shape(w)} does not match {tuple(t.shape)}")
            t.copy_(torch.as_tensor(np.asarray(w)))


def get_flat(model: nn.Module) -> np.ndarray:
    """All of ``state_dict`` (parameters and buffers) as one float32 vector."""
    with torch.no_grad():
        return torch.cat([t.detach().reshape(-1).to(torch.float32)
                          for t in model.state_dict().values()]).numpy()


def get_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The flat state dict (parameters and buffers) as numpy copies."""
    return {k: t.detach().cpu().numpy().copy() for k, t in model.state_dict().items()}


def set_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})


def average_weights(weight_sets: Sequence[Any], counts: Sequence[float] | None = None) -> Any:
    """Sample-weighted average of several weight lists, or of several flat vectors.

    Accumulates in float64, so averaging identical weights gives them back exactly; every array
    keeps its dtype and integer buffers (BatchNorm's ``num_batches_tracked``) are rounded.
    """
    if not len(weight_sets):
        raise ValueError("nothing to average")
    c = np.ones(len(weight_sets)) if counts is None else np.asarray(counts, dtype=np.float64)
    if len(c) != len(weight_sets) or c.sum() <= 0:
        raise ValueError("counts need one entry per weight set and a positive sum")
    flat = isinstance(weight_sets[0], np.ndarray)
    sets = [[w] for w in weight_sets] if flat else weight_sets
    total = c.sum()
    out = []
    for arrays in zip(*sets, strict=False):
        # In place, one float64 scratch buffer: ~11M-value vectors every round.
        acc = np.multiply(arrays[0], c[0], dtype=np.float64)
        tmp = np.empty_like(acc) if len(arrays) > 1 else None
        for ci, arr in zip(c[1:], arrays[1:], strict=True):
            np.multiply(arr, ci, out=tmp, dtype=np.float64)
            acc += tmp
        acc /= total
        dtype = np.asarray(arrays[0]).dtype
        if np.issubdtype(dtype, np.integer):
            acc = np.rint(acc)
        out.append(acc.astype(dtype))
    return out[0] if flat else out


# -- training ---------------------------------------------------------------------------------
def sgd_steps(model: nn.Module, X: torch.Tensor, y: torch.Tensor, start: int, steps: int,
              batch_size: int, lr: float, seed: int, shard: int = 0,
              total_steps: int | None = None) -> tuple[float, int]:
    """Plain-SGD steps ``start .. start+steps-1`` of a sequence of passes over the rows.

    Step ``s`` is batch ``s mod P`` of pass ``s // P`` (P = ceil(rows / batch_size), the last
    batch of a pass possibly short); each pass is a permutation drawn by
    ``default_rng([seed, pass, shard])``, so a shard trained in rounds of a few steps sees
    exactly the batches it would see in one uninterrupted run.  With ``total_steps`` the
    learning rate follows a cosine decay from ``lr`` (step 0) towards 0 (step ``total_steps``),
    a function of the step index only, so it needs no optimiser state.  Returns
    (Σ batch mean loss × batch rows, rows processed).
    """
    n = len(X)
    bs = max(1, min(batch_size, n))
    per_pass = steps_per_pass(n, bs)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    perm: NDArray[np.int64] = np.arange(0)
    cur = -1
    loss_sum, seen = 0.0, 0
    for s in range(start, start + steps):
        epoch, k = divmod(s, per_pass)
        if epoch != cur:
            perm = np.random.default_rng([int(seed), epoch, int(shard)]).permutation(n)
            cur = epoch
        idx = torch.from_numpy(perm[k * bs:(k + 1) * bs])
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        rate = lr if not total_steps else (
            lr * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-rate)  # type: ignore[arg-type]  # set by backward()
        loss_sum += float(loss.detach()) * len(idx)
        seen += len(idx)
    return loss_sum, seen


_cache = threading.local()


def _model_for(spec: dict[str, Any]) -> nn.Module:
    """One model object per (arch, width) per thread (LocalEngine runs tasks on threads)."""
    models: dict[tuple[str, int], nn.Module] | None = getattr(_cache, "models", None)
    if models is None:
        models = _cache.models = {}
    key = (spec["arch"], int(spec.get("width", 64)))
    if key not in models:
        models[key] = build_model(key[0], key[1], int(spec.get("seed", 0)))
    return models[key]


def shard_spec(arch: str, params: dict[str, Any], width: int = 0) -> dict[str, Any]:
    """The training settings every ``train_shard`` task receives, from workload params."""
    return {"arch": arch, "width": int(width), "lr": float(params["lr"]),
            "seed": int(params["seed"]), "local_steps": int(params["local_steps"]),
            "batch_size": int(params["batch_size"])}


def train_shard(bounds: tuple[int, int], X: np.ndarray, y: np.ndarray,
                weights: Sequence[np.ndarray], spec: dict[str, Any]
                ) -> tuple[list[np.ndarray], float, int]:
    """One worker's part of a local-SGD round.

    Loads ``weights`` (a list or a flat vector) into the ``spec["arch"]`` model, takes
    ``spec["local_steps"]`` plain-SGD steps of ``spec["batch_size"]`` rows from ``X[lo:hi]``
    (round ``r`` takes steps ``r·local_steps ..`` of the shard's pass sequence, whose
    permutations are seeded from (seed, pass, ``lo``); see :func:`sgd_steps`) and returns
    (new weights in the form received, summed loss, samples seen), where summed loss is
    Σ batch mean loss × batch rows.
    """
    lo, hi = bounds
    model = _model_for(spec)
    set_weights(model, weights)
    steps = int(spec["local_steps"])
    loss_sum, seen = sgd_steps(model, prep(X[lo:hi]), labels(y[lo:hi]),
                               int(spec.get("round", 0)) * steps, steps, int(spec["batch_size"]),
                               float(spec["lr"]), int(spec.get("seed", 0)), lo,
                               spec.get("total_steps"))
    new = get_flat(model) if isinstance(weights, np.ndarray) else get_weights(model)
    return new, loss_sum, seen


def evaluate(model: nn.Module, X: np.ndarray, y: np.ndarray,
             batch_size: int = 512) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on (X, y)."""
    loss_sum, correct = _score(model, X, y, batch_size)
    n = max(1, len(X))
    return loss_sum / n, correct / n


def _score(model: nn.Module, X: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, int]:
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(X), batch_size):
            xb, yb = prep(X[lo:lo + batch_size]), labels(y[lo:lo + batch_size])
            out = model(xb)
            loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    return loss_sum, correct


def eval_chunk(bounds: tuple[int, int], X: np.ndarray, y: np.ndarray,
               weights: Sequence[np.ndarray], spec: dict[str, Any]) -> tuple[float, int, int]:
    """Worker task: (summed loss, correct predictions, rows) on ``X[lo:hi]``."""
    lo, hi = bounds
    model = _model_for(spec)
    set_weights(model, weights)
    loss_sum, correct = _score(model, X[lo:hi], y[lo:hi], 512)
    return loss_sum, correct, hi - lo


def steps_per_pass(rows: int, batch_size: int) -> int:
    """Mini-batch steps in one pass over ``rows`` rows."""
    return max(1, math.ceil(rows / max(1, min(batch_size, rows))))


# -- the driver's side of data-parallel training -----------------------------------------------
def train_rounds(engine: Any, X: Any, y: Any, parts: list[tuple[int, int]], weights: np.ndarray,
                 spec: dict[str, Any], rounds: int) -> tuple[np.ndarray, list[tuple[float, int]]]:
    """Local SGD with periodic model averaging: ``rounds`` times, ship the global flat weights
    (one ``engine.put`` per round), let every shard in ``parts`` take its local steps (one
    ``engine.map``), and average the returned weights weighted by samples.  ``X``/``y`` are
    handles from ``put``.  Returns (final weights, per-round (summed loss, samples))."""
    history = []
    for r in range(rounds):
        w = engine.put(weights)
        try:
            results = engine.map(train_shard, parts, X, y, w, {**spec, "round": r})
        finally:
            engine.release(w)
        weights = average_weights([res[0] for res in results], [res[2] for res in results])
        history.append((sum(res[1] for res in results), sum(res[2] for res in results)))
    return weights, history


def evaluate_distributed(engine: Any, X: Any, y: np.ndarray, n: int, weights: np.ndarray,
                         spec: dict[str, Any]) -> tuple[float, float]:
    """(mean loss, accuracy) on the test rows, scored by ``parallelism`` tasks."""
    w = engine.put(weights)
    try:
        parts = chunks(n, engine.parallelism)
        res = engine.map(eval_chunk, parts, X, y, w, spec)
    finally:
        engine.release(w)
    rows = max(1, sum(r[2] for r in res))
    return sum(r[0] for r in res) / rows, sum(r[1] for r in res) / rows
