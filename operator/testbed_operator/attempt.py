"""One trial attempt as the reconcile loop (:mod:`.reconcile`) steps it: its :class:`Stage`,
read from the trial's status fields so that it survives restarts, and the :class:`TrialRun`
that collects a step's changes to the status until the loop writes them, once per step."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .drivers import Driver, TrialContext
from .podwatch import PodFailureWatch


class Stage(enum.Enum):
    """Where a trial attempt is, read from its status fields (so it survives restarts)."""

    SUBMIT = "Submit"  # the cluster object is not created yet
    STARTING = "Starting"  # created; not ready yet
    RUNNING = "Running"  # ready (``clusterReadyAt``): the runner runs


def stage_of(trial: dict[str, Any], driver: Driver) -> Stage:
    if not trial.get(driver.created_field):
        return Stage.SUBMIT
    return Stage.RUNNING if trial.get("clusterReadyAt") else Stage.STARTING


@dataclass
class TrialRun:
    """One attempt of one trial as the loop drives it; ``status`` is updated in place and
    written at the end of each step when ``dirty``."""

    ctx: TrialContext
    driver: Driver
    objects: list[dict[str, Any]]  # the driver's manifests: the cluster first, the runner last
    status: dict[str, Any]
    index: int
    startup_limit: float
    run_limit: float
    watch: PodFailureWatch
    dirty: bool = False

    @property
    def trial(self) -> dict[str, Any]:
        return self.status["trials"][self.index]  # type: ignore[no-any-return]

    def mark(self, **fields: Any) -> None:
        self.trial.update(fields)
        self.dirty = True
