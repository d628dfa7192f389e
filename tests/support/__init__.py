"""Helpers shared by the test tiers (and benchmarks/): one home for each."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.engines.ray_launch import free_port as _engine_free_port
from bench.record import ResultRecord, new_record


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (``""``: on every interface, as containers sharing the
    host's network need). The engine's own picker, so a port handed out here never coincides
    with one the engine gave a local Ray node in the same process."""
    return _engine_free_port(host)


def make_record(workload: str = "knn", framework: str = "ray", workers: int = 1,
                seconds: Sequence[float] = (1.0, 1.0, 1.0), state: str = "succeeded",
                error: str | None = None, quality: float = 0.95, metric: str = "accuracy",
                run_id: str = "r1", phases: dict[str, Any] | None = None,
                resources: dict[str, Any] | None = None, faults: dict[str, Any] | None = None,
                **fields: Any) -> ResultRecord:
    """A finished trial's record, as the runner writes it (bench.record.new_record, then the
    figures); ``fields`` override any field."""
    seconds = list(seconds) if state == "succeeded" else []
    rec = new_record(run_id=run_id, benchmark="test", framework=framework, workers=workers,
                     workload=workload, params={},
                     dataset={"name": "digits", "samples": 1797, "features": 64, "classes": 10},
                     quality_metric=metric, environment={"hostname": "h", "cores": 4},
                     load_seconds=0.5)
    rec.update({
        "time": "2026-01-01T00:00:00Z", "state": state, "error": error,
        "phases": phases if phases is not None else {
            "startup": 2.0, "load": 0.5, "distribute": 0.25, "warmup": [1.0], "compute": seconds},
        "seconds": seconds, "median": None, "iqr": None, "min": None,
        "quality": {metric: quality} if state == "succeeded" else {},
        "tasks": 4,
        "resources": resources if resources is not None else {
            "workers": [], "cpu_mean": 90.0, "cpu_peak": 100.0, "rss_peak": 200 * 2**20},
        "faults": faults,
    })
    rec.update(fields)  # type: ignore[typeddict-item]  # (any field, for a test's purpose)
    return rec
