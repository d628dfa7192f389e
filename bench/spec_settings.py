"""The spec's framework and fault settings (``ray``, ``dask``, ``faults``) and the base of
every spec model."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

MAX_WORKERS = 1024


class SpecModel(BaseModel):
    """The base of every spec model: camelCase aliases, unknown fields forbidden, strict."""


    # strict: no bool -> int (true -> 1), float -> int (1.0 -> 1) or str -> number coercion;
    # the CRD says `type: integer` for the same fields, which Kubernetes enforces alike.
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=False, strict=True
    )


class FaultSpec(SpecModel):
    """One extra run per trial during which workers (and optionally the head) are killed."""

    kill_workers: int = Field(default=1, ge=0, le=MAX_WORKERS)
    kill_head: bool = False
    """Also kill the Ray head (GCS) / the Dask scheduler at the same moment."""
    after_seconds: float | None = Field(default=None, ge=0, le=24 * 3600)
    after_fraction: float | None = Field(default=None, gt=0, lt=1)
    """Kill once this fraction of the workload's fault-free median time has passed."""
    after_tasks_fraction: float | None = Field(default=None, gt=0, lt=1)
    """Kill once this fraction of the run's tasks (as many as a fault-free run submitted) has
    finished: a fraction of the work itself (Ray and Dask ``map`` tasks)."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Picks the victims (``random.Random(seed)``), so a run repeats."""
    detect_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """How long to wait, after the kill, for the framework to notice (and for a hung run)."""

    @model_validator(mode="after")
    def _when(self) -> FaultSpec:
        given = [n for n, v in (("afterSeconds", self.after_seconds),
                                 ("afterFraction", self.after_fraction),
                                 ("afterTasksFraction", self.after_tasks_fraction))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of afterSeconds, afterFraction and afterTasksFraction, "
                             f"not {' and '.join(given)}")
        if not given:
            self.after_seconds = 1.0
        if self.kill_workers == 0 and not self.kill_head:
            raise ValueError("nothing to kill: set killWorkers above 0 or killHead: true")
        return self


class RaySettings(SpecModel):
    """Ray's fault-tolerance knobs, applied to every Ray and Dask-on-Ray trial and recorded."""

    max_retries: int = Field(default=3, ge=0, le=100)
    """``ray.remote(max_retries=...)``: re-runs of a task whose worker or node died."""
    health_check_period_ms: int = Field(default=3000, ge=100, le=600_000)
    """GCS health checks of each node (``RAY_health_check_period_ms`` on the head)."""
    health_check_failure_threshold: int = Field(default=5, ge=1, le=100)
    """Missed checks before a node is marked dead (``RAY_health_check_failure_threshold``)."""
    auth_mode: Literal["token", "disabled"] = "token"
    """Ray's token authentication (``RAY_AUTH_MODE``) for the trial's cluster and its driver.
    ``token``: a token made for the run, never ``~/.ray/auth_token`` (locally: a file in the
    run's temp dir; on Kubernetes: KubeRay's ``authOptions``). ``disabled``: anyone who can
    reach the cluster's ports may use it."""

    def head_env(self) -> dict[str, str]:
        """The head's (GCS's) settings as Ray config environment variables (local head
        processes and KubeRay head pods alike)."""
        return {"RAY_health_check_period_ms": str(self.health_check_period_ms),
                "RAY_health_check_failure_threshold": str(self.health_check_failure_threshold)}


class DaskSettings(SpecModel):
    """Dask's fault-tolerance knobs, applied to every Dask trial and recorded."""

    allowed_failures: int = Field(default=3, ge=0, le=100)
    """``distributed.scheduler.allowed-failures``: worker deaths a task survives before
    ``KilledWorker``."""
    nanny: bool = True
    """Run each worker under a nanny, which restarts a worker process that dies."""

    def scheduler_env(self) -> dict[str, str]:
        """The scheduler's settings as Dask config environment variables."""
        return {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(self.allowed_failures)}
