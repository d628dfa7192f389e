"""A workload that does nothing: measures what the harness itself adds per timed repeat."""
from __future__ import annotations

from typing import ClassVar

from bench.datasets import Dataset
from bench.engines import Engine

from .base import Outcome, Params, State, Tolerance, Workload


class Noop(Workload):
    name = "noop"
    quality_metric = "ok"
    tolerance: ClassVar[Tolerance] = {"ok": (0.0, 0.0)}

    def distribute(self, engine: Engine, data: Dataset, params: Params) -> State:
        return {}

    def run(self, engine: Engine, state: State, params: Params) -> Outcome:
        return Outcome({"ok": 1.0})
