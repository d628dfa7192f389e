"""CNN training on digits: data-parallel local SGD with periodic model averaging.

Model: the small CNN of :mod:`.torchnet` (conv 1→16, conv 16→32, max-pool, 512→64→10).

Distributed (every framework): the training rows are split into ``engine.parallelism``
contiguous shards.  Each round the driver puts its current weights (one flat float32 vector) into
the cluster once and runs one ``engine.map`` over the shards; every task loads the weights, takes
``local_steps`` plain-SGD steps of ``batch_size`` rows from its shard and returns its weights,
which the driver averages weighted by samples: that average is the next global model.  Rounds =
ceil(epochs × ceil(shard rows / batch_size) / local_steps), so every worker makes about
``epochs`` passes over its shard.  The test set is then scored by ``parallelism`` tasks.

Local baseline: plain mini-batch SGD over the whole training set for ``epochs`` passes with
``batch_size`` rows per step, in-process with the engine's torch threads: the same algorithm
with one shard (averaging one model is the identity), so the same number of sample visits.

Quality: test accuracy (compared within ``tolerance``) and the mean training loss over the last
pass.  ``samples_per_s`` counts training samples processed per second of the training loop
(weight shipping and averaging included, the final test scoring excluded).
"""
from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np

from bench.engines.base import Engine

from . import torchnet as tn
from .base import Outcome, Params, State, Tolerance, Workload, chunks


class Cnn(Workload):
    name = "cnn"
    quality_metric = "accuracy"
    tolerance: ClassVar[Tolerance] = {"accuracy": (0.05, 0.0)}

    @staticmethod
    def _spec(params: Params) -> dict[str, Any]:
        return tn.shard_spec("cnn", params)

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        X, y = state["X_train"], state["y_train"]
        model = tn.build_model("cnn", seed=params["seed"])
        bs = params["batch_size"]
        per_pass = tn.steps_per_pass(len(X), bs)
        Xt, yt = tn.prep(X), tn.labels(y)
        t0 = time.perf_counter()
        seen, last = 0, float("nan")
        for epoch in range(params["epochs"]):
            loss_sum, n = tn.sgd_steps(model, Xt, yt, epoch * per_pass, per_pass, bs,
                                       params["lr"], params["seed"], 0,
                                       params["epochs"] * per_pass)
            seen += n
            last = loss_sum / max(1, n)
        elapsed = time.perf_counter() - t0
        _, acc = tn.evaluate(model, state["X_test"], state["y_test"])
        return Outcome({"accuracy": acc, "loss": last},
                       {"rounds": math.ceil(params["epochs"] * per_pass / params["local_steps"]),
                        "steps": params["epochs"] * per_pass, "shards": 1,
                        "samples_per_s": seen / elapsed, "params": tn.param_count(model)})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        parts = chunks(state["n_train"], engine.parallelism)
        shard = max(hi - lo for lo, hi in parts)
        per_pass = tn.steps_per_pass(shard, params["batch_size"])
        rounds = max(1, math.ceil(params["epochs"] * per_pass / params["local_steps"]))
        spec = {**self._spec(params), "total_steps": rounds * params["local_steps"]}
        model = tn.build_model("cnn", seed=params["seed"])
        weights = tn.get_flat(model)
        t0 = time.perf_counter()
        weights, history = tn.train_rounds(engine, state["X_train"], state["y_train"], parts,
                                           weights, spec, rounds)
        elapsed = time.perf_counter() - t0
        last = history[-min(len(history), math.ceil(per_pass / params["local_steps"])):]
        loss = sum(h[0] for h in last) / max(1, sum(h[1] for h in last))
        seen = sum(h[1] for h in history)
        _, acc = tn.evaluate_distributed(engine, state["X_test"], np.asarray(state["y_test"]),
                                         state["n_test"], weights, spec)
        return Outcome({"accuracy": acc, "loss": loss},
                       {"rounds": rounds, "steps": rounds * params["local_steps"],
                        "shards": len(parts), "samples_per_s": seen / elapsed,
                        "params": tn.param_count(model)})
