"""Timers, CPU/memory samplers and environment capture.

The samplers run *inside* the worker processes (started through the framework itself: a Dask
``client.run`` or a Ray actor pinned to each node), so the same code measures a local cluster
and pods on Kubernetes.
"""
from __future__ import annotations

import os
import platform
import socket
import threading
import time
from typing import Any

import psutil


class TreeSampler:
    """Samples CPU (percent of one core) and RSS (bytes) of a process and its descendants."""

    def __init__(self, root_pid: int | None = None, interval: float = 0.1,
                 include_root: bool = True):
        self.root_pid = root_pid or os.getpid()
        self.interval = interval
        self.include_root = include_root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu: list[float] = []
        self._rss: list[int] = []
        self._last: dict[int, float] = {}
        self._last_t = 0.0

    def _procs(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            procs: list[psutil.Process] = root.children(recursive=True)
            return ([root] if self.include_root else []) + procs
        except psutil.Error:
            return []

    def _tick(self, record: bool) -> None:
        now = time.perf_counter()
        cpu_total, rss_total, seen = 0.0, 0, {}
        for p in self._procs():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    used = t.user + t.system
                    rss = p.memory_info().rss
            except psutil.Error:
                continue
            seen[p.pid] = used
            cpu_total += used - self._last.get(p.pid, used)
            rss_total += rss
        if record and self._last_t:
            dt = now - self._last_t
            if dt > 0:
                self._cpu.append(100.0 * cpu_total / dt)
                self._rss.append(rss_total)
        self._last, self._last_t = seen, now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick(record=True)

    def start(self) -> None:
        self._cpu.clear()
        self._rss.clear()
        self._stop.clear()
        self._tick(record=False)
        self._thread = threading.Thread(target=self._loop, name="testbed-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._tick(record=True)  # one closing sample so short runs still get a figure
        return summarize_samples(self._cpu, self._rss)


def summarize_samples(cpu: list[float], rss: list[int]) -> dict[str, Any]:
    return {
        "cpu_mean": sum(cpu) / len(cpu) if cpu else None,
        "cpu_peak": max(cpu) if cpu else None,
        "rss_mean": int(sum(rss) / len(rss)) if rss else None,
        "rss_peak": max(rss) if rss else None,
        "samples": len(cpu),
    }


def combine_workers(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster-level figures: total CPU (sum of worker means), highest worker RSS peak."""
    cpu = [w["cpu_mean"] for w in workers if w.get("cpu_mean") is not None]
    peak = [w["cpu_peak"] for w in workers if w.get("cpu_peak") is not None]
    rss = [w["rss_peak"] for w in workers if w.get("rss_peak") is not None]
    return {
        "workers": workers,
        "cpu_mean": sum(cpu) if cpu else None,
        "cpu_peak": sum(peak) if peak else None,
        "rss_peak": max(rss) if rss else None,
        "rss_total_peak": sum(rss) if rss else None,
    }


# A sampler per worker process, driven through the framework (Dask's client.run).
_WORKER_SAMPLER: dict[str, TreeSampler] = {}


def worker_start_sampling(interval: float = 0.1, dask_worker: Any = None) -> int:
    """``dask_worker``: distributed's ``client.run`` passes the worker (unused here)."""
    old = _WORKER_SAMPLER.pop("sampler", None)
    if old is not None:
        old.stop()
    s = _WORKER_SAMPLER["sampler"] = TreeSampler(os.getpid(), interval)
    s.start()
    return os.getpid()


def worker_stop_sampling(dask_worker: Any = None) -> dict[str, Any]:
    s = _WORKER_SAMPLER.pop("sampler", None)
    out = s.stop() if s is not None else summarize_samples([], [])
    out["pid"] = os.getpid()
    out["host"] = socket.gethostname()
    return out


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for pkg in ("ray", "dask", "distributed", "scikit-learn", "torch", "numpy", "pandas"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    from . import __version__

    mem = psutil.virtual_memory().total
    return {
        "testbed": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "versions": versions,
    }
