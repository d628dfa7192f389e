"""ResNet-18 training throughput on digits: a fixed amount of data-parallel local SGD.

Model: the plain-torch ResNet-18 of :mod:`.torchnet` (BasicBlock ×[2, 2, 2, 2], 3×3 stride-1
stem for 8×8 input; ``width`` 64 is the real network, about 11.17M parameters).  The point of
this workload is the cost of a big model: every round ships ~45 MB of weights (one flat float32
vector, parameters and BatchNorm buffers) to each worker and back.

Distributed (every framework): the training rows are split into ``engine.parallelism`` shards;
``steps`` rounds, each one ``engine.put`` of the global weights and one ``engine.map`` in which
every worker takes ``local_steps`` plain-SGD steps of ``batch_size`` rows from its shard and
returns its weights, which the driver averages weighted by samples.  The test set is then
scored by ``parallelism`` tasks.

Local baseline, and why it is fair: it performs the same number of sequential updates
(``steps × local_steps``) on the same total number of samples as a distributed run with
``parallelism`` workers, i.e. each step is one SGD step on ``batch_size × parallelism`` rows of
the whole training set, in-process with the engine's torch threads.  With ``local_steps`` = 1
(the default) the distributed round is exactly that big-batch step (the average of the workers'
one-step weights equals one step on the mean gradient), except that BatchNorm normalises each
worker's batch separately; so both runs do the same arithmetic work and reach comparable
accuracy.  The local engine's ``parallelism`` is its thread count, so the sample count matches a
distributed run when the baseline is run with as many threads as the cluster has workers; with
fewer threads the baseline trains on smaller batches for the same number of steps (both figures
are still reported per second, so throughput stays comparable).

Training is short (``steps`` rounds), so accuracy is well below convergence and varies more
between runs than the CNN's; the tolerance was set from measurements (see ``tolerance``).
The learning rate follows a cosine decay over the steps (a function of the step index, no
optimiser state).  ``samples_per_s`` counts training samples per second of the training loop
(weight shipping and averaging included, the final test scoring excluded).
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from bench.engines.base import Engine

from . import torchnet as tn
from .base import Outcome, Params, State, Tolerance, Workload, chunks


class ResNet18(Workload):
    name = "resnet18"
    quality_metric = "accuracy"
    tolerance: ClassVar[Tolerance] = {"accuracy": (0.15, 0.0)}

    @staticmethod
    def _spec(params: Params) -> dict[str, Any]:
        return {**tn.shard_spec("resnet18", params, params["width"]),
                "total_steps": int(params["steps"]) * int(params["local_steps"])}

    def run_local(self, engine: Engine, state: State, params: Params) -> Outcome:
        X, y = state["X_train"], state["y_train"]
        model = tn.build_model("resnet18", params["width"], params["seed"])
        total = params["steps"] * params["local_steps"]
        bs = params["batch_size"] * max(1, engine.parallelism)
        Xt, yt = tn.prep(X), tn.labels(y)
        t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        last = float("nan")
        for step in range(total):
            ls, n = tn.sgd_steps(model, Xt, yt, step, 1, bs, params["lr"], params["seed"], 0,
                                 total)
            loss_sum, seen, last = loss_sum + ls, seen + n, ls / max(1, n)
        elapsed = time.perf_counter() - t0
        _, acc = tn.evaluate(model, state["X_test"], state["y_test"])
        return Outcome({"accuracy": acc, "loss": last},
                       {"rounds": params["steps"], "shards": 1, "batch": bs,
                        "samples_per_s": seen / elapsed, "params": tn.param_count(model)})

    def run_distributed(self, engine: Engine, state: State, params: Params) -> Outcome:
        parts = chunks(state["n_train"], engine.parallelism)
        spec = self._spec(params)
        model = tn.build_model("resnet18", params["width"], params["seed"])
        weights = tn.get_flat(model)
        t0 = time.perf_counter()
        weights, history = tn.train_rounds(engine, state["X_train"], state["y_train"], parts,
                                           weights, spec, params["steps"])
        elapsed = time.perf_counter() - t0
        seen = sum(h[1] for h in history)
        loss = history[-1][0] / max(1, history[-1][1])
        _, acc = tn.evaluate_distributed(engine, state["X_test"], np.asarray(state["y_test"]),
                                         state["n_test"], weights, spec)
        return Outcome({"accuracy": acc, "loss": loss},
                       {"rounds": params["steps"], "shards": len(parts),
                        "batch": params["batch_size"] * len(parts),
                        "samples_per_s": seen / elapsed, "params": tn.param_count(model)})
