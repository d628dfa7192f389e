"""Helpers shared by the test tiers (and benchmarks/): one home for each."""
from __future__ import annotations

from bench.engines.ray_launch import free_port as _engine_free_port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (``""``: on every interface, as containers sharing the
    host's network need). The engine's own picker, so a port handed out here never coincides
    with one the engine gave a local Ray node in the same process."""
    return _engine_free_port(host)
