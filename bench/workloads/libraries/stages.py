"""``etl``'s staged runs (``params.stages``): the clock of each operation, and Dask's
materialization after one."""
from __future__ import annotations

import time
from typing import Any


class Laps:
    """Seconds per operation of a staged run (``params.stages``): ``lap(name)`` ends operation
    ``name``, timed since the previous lap (or :meth:`skip`); off, it records nothing (the
    fused pipeline, where the libraries run every operation in one graph)."""

    def __init__(self, on: bool):
        self.on = on
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        if self.on:
            self.seconds[name] = now - self._t
        self._t = now

    def set(self, name: str, seconds: float) -> None:
        """Operation ``name`` took ``seconds`` (timed by the caller); the next starts now."""
        if self.on:
            self.seconds[name] = seconds
        self._t = time.perf_counter()

    def skip(self) -> None:
        """Start the next operation's clock now (what ran since is no operation's)."""
        self._t = time.perf_counter()


def dask_keep(lap: Laps) -> Any:
    """Staged: materialize a collection on the workers (``persist``; on a distributed
    cluster ``persist`` returns at once, so wait for its futures; Dask's single-machine
    schedulers and Dask-on-Ray compute in ``persist`` itself); fused: leave it lazy."""
    from distributed import futures_of, wait

    def keep(df: Any) -> Any:
        if not lap.on:
            return df
        out = df.persist()
        futures = futures_of(out)  # type: ignore[no-untyped-call]  # (distributed: unannotated)
        if futures:
            wait(futures)  # type: ignore[no-untyped-call]
        return out

    return keep
