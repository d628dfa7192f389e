"""One way to retry a connection attempt within a deadline (Ray's ``ray.init``, Dask's
``Client``): both frameworks' own retries give up on a fixed window of their own, shorter than a
cluster that is still starting may need."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_until(attempt: Callable[[float], T], timeout: float, *,
                retry_on: tuple[type[BaseException], ...],
                give_up: Callable[[BaseException], bool] | None = None,
                between: Callable[[], None] | None = None, pause: float = 1.0) -> T:
    """``attempt(seconds_left)`` until it returns, for at most ``timeout`` seconds.

    An exception of ``retry_on`` is retried after ``between()`` (a check that may raise, or a
    clean-up) and ``pause`` seconds, unless ``give_up(exc)`` says it is final or the next try
    would start past the deadline: then it propagates, as does anything else.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt(deadline - time.monotonic())
        except retry_on as e:
            if (give_up is not None and give_up(e)) or time.monotonic() + pause >= deadline:
                raise
        if between is not None:
            between()
        time.sleep(pause)
