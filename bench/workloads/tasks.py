"""Many tiny tasks: each framework's per-task overhead and throughput.

Each task computes ``factorial(n)`` (microseconds of work).  ``count`` tasks are submitted at
once and gathered (throughput: overhead amortised over parallel submission), then ``sync_count``
tasks are submitted one at a time, each awaited (latency: the full round trip of one task).  The
local baseline is a plain Python loop calling the same function, which is what makes the
frameworks' overhead visible rather than surprising.  Quality figure: the fraction of correct
results (must be 1.0).
"""
from __future__ import annotations

import math
import time
from typing import ClassVar

from bench.datasets import Dataset
from bench.engines.base import Engine

from .base import Outcome, Params, State, Tolerance, Workload


def factorial_mod(n: int) -> int:
    return math.factorial(n) % 1_000_003


class Tasks(Workload):
    name = "tasks"
    quality_metric = "correct"
    tolerance: ClassVar[Tolerance] = {"correct": (0.0, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        return {}

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        n, expected = params["n"], factorial_mod(params["n"])
        t0 = time.perf_counter()
        many = engine.tiny_tasks(factorial_mod, n, params["count"], sync=False)
        t1 = time.perf_counter()
        one_by_one = engine.tiny_tasks(factorial_mod, n, params["sync_count"], sync=True)
        t2 = time.perf_counter()
        results = many + one_by_one
        correct = sum(r == expected for r in results) / len(results)
        return Outcome(
            {"correct": float(correct)},
            {
                "per_task_us_async": 1e6 * (t1 - t0) / params["count"],
                "per_task_us_sync": 1e6 * (t2 - t1) / params["sync_count"],
                "tasks_per_s": params["count"] / (t1 - t0) if t1 > t0 else None,
            },
        )
