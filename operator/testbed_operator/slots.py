"""Trial slots: how many trials run at once across all Benchmarks, granted in arrival order."""
from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable


class TrialSlots:
    """At most ``limit`` trials at once across Benchmarks, granted in arrival order.

    ``running_elsewhere`` returns the Benchmarks whose status shows a Running trial (read from
    the API), so after a restart the resumed trials count before their daemons get here."""

    def __init__(self, limit: int,
                 running_elsewhere: Callable[[], Awaitable[set[tuple[str, str]]]], poll: float):
        self.limit = max(1, limit)
        self.held: set[tuple[str, str]] = set()
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._cond = asyncio.Condition()
        self._running_elsewhere = running_elsewhere
        self._poll = poll

    def hold(self, key: tuple[str, str]) -> None:
        """A resumed trial: it is running already, so it takes its slot unconditionally."""
        self.held.add(key)

    async def acquire(self, key: tuple[str, str]) -> None:
        async with self._cond:
            self._queue.append(key)
        try:
            while True:
                async with self._cond:
                    if self._queue[0] == key and len(self.held) < self.limit:
                        busy = self.held | (await self._running_elsewhere() - {key})
                        if len(busy) < self.limit:
                            self._queue.popleft()
                            self.held.add(key)
                            return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), self._poll)
        finally:
            async with self._cond:
                if key in self._queue:
                    self._queue.remove(key)
                self._cond.notify_all()

    async def release(self, key: tuple[str, str]) -> None:
        async with self._cond:
            self.held.discard(key)
            self._cond.notify_all()
