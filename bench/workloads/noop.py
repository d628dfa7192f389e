"""A workload that does nothing: measures what the harness itself adds per timed repeat."""
from __future__ import annotations

from .base import Outcome, Workload


class Noop(Workload):
    name = "noop"
    quality_metric = "ok"
    tolerance = {"ok": (0.0, 0.0)}

    def distribute(self, engine, data, params):
        return {}

    def run(self, engine, state, params) -> Outcome:
        return Outcome({"ok": 1.0})
