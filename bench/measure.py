"""Timers, CPU/memory samplers, the machine's noise figures and environment capture.

The samplers run *inside* the worker processes (started through the framework itself: a Dask
``client.run`` or a Ray actor pinned to each node), so the same code measures a local cluster
and pods on Kubernetes: there each sampler reads its own pod's processes, and only its summary
and timeline travel back to the driver.
"""
from __future__ import annotations

import functools
import os
import platform
import re
import socket
import threading
import time
from typing import Any

import numpy as np
import psutil

BURST_INTERVAL, BURST_SAMPLES = 0.01, 10
"""The samplers' first samples come this often, so a compute phase of 0.1 s gets 10."""
FIRST_INTERVAL = 0.05
"""Then at most this interval (seconds), until the points accumulate (``MAX_POINTS``)."""
MAX_POINTS = 400
"""Points a sampler holds; at this many it merges neighbours and doubles its interval."""
TIMELINE_POINTS = 200
"""Points a worker's timeline keeps in the record (at most)."""
TIMELINE_TOTAL = 4000
"""Points all the workers' timelines of one record keep together (at most; at least 20 each):
a record must fit, with the run's others, in the runner's result ConfigMap (900 KiB,
bench.kube.channel)."""
_TREE_REFRESH = 1.0
"""Seconds between rescans of the sampled process tree (a scan reads every /proc entry)."""
_READ_EVERY, _READ_GROWTH = 1.0, 1.1
"""PSS and unique memory are read at a new RSS peak at most once a second, unless the RSS sum
has grown by 10 % since their last reading."""


WORKER_CONTAINER_ENV = "TESTBED_WORKER_CONTAINER"  # = bench.kube.names.WORKER_CONTAINER_ENV
"""Set to ``1`` by the operator in the containers of the worker pods it creates (a Ray worker
node, a Dask worker with its nanny): there the container's memory cgroup holds that one worker,
and the samplers also read its working set (:class:`CgroupMemory`)."""


class CgroupMemory:
    """A memory cgroup's working set, as Kubernetes counts a container's memory: usage minus
    the inactive file pages (cAdvisor's ``setMemoryStats``, container/libcontainer/handler.go:
    ``memory.usage_in_bytes`` less ``total_inactive_file`` of ``memory.stat`` on cgroup v1,
    ``memory.current`` less ``inactive_file`` on v2, never below 0). It is the
    ``container_memory_working_set_bytes`` of ``kubectl top pod`` and what the kubelet evicts
    by; unlike an RSS sum it counts a page shared by the container's processes once, and
    unlike the unique memory of :func:`tree_memory` it needs no privilege."""

    def __init__(self, directory: str, v2: bool):
        self.directory = directory
        self._usage = os.path.join(directory, "memory.current" if v2 else "memory.usage_in_bytes")
        self._stat = os.path.join(directory, "memory.stat")
        self._inactive = b"inactive_file" if v2 else b"total_inactive_file"

    @classmethod
    def of_this_process(cls) -> CgroupMemory | None:
        """The memory cgroup this process is in, or None: its path in ``/proc/self/cgroup``
        (the unified v2 hierarchy's, or the v1 ``memory`` controller's), found under the
        mount of that hierarchy in ``/proc/self/mountinfo`` relative to the mount's root (a
        container's mount shows only its own cgroup: its root is the container's path)."""
        try:
            with open("/proc/self/cgroup") as f:
                own = dict(_own_cgroups(f.read()))
            with open("/proc/self/mountinfo") as f:
                mounts = f.read().splitlines()
        except OSError:
            return None
        for line in mounts:
            fields, _, fs = line.partition(" - ")
            root, point = fields.split()[3:5]
            fstype, _source, options = [*fs.split(), "", ""][:3]
            v2 = fstype == "cgroup2"
            if not v2 and not (fstype == "cgroup" and "memory" in options.split(",")):
                continue
            path = own.get("" if v2 else "memory")
            if path is None or not (path + "/").startswith(root.rstrip("/") + "/"):
                continue
            found = cls(os.path.normpath(os.path.join(point, os.path.relpath(path, root))), v2)
            if os.path.isfile(found._usage):
                return found
        return None

    @classmethod
    def of_worker_container(cls) -> CgroupMemory | None:
        """This process's cgroup where the operator said it is a worker's container."""
        return cls.of_this_process() if os.environ.get(WORKER_CONTAINER_ENV) == "1" else None

    def working_set(self) -> int | None:
        """Bytes now, or None where the files cannot be read."""
        try:
            with open(self._usage, "rb") as f:
                usage = int(f.read())
            with open(self._stat, "rb") as f:
                stat = f.read()
        except (OSError, ValueError):
            return None
        inactive = re.search(rb"^" + self._inactive + rb" (\d+)$", stat, re.M)
        return max(0, usage - (int(inactive.group(1)) if inactive else 0))


def _own_cgroups(text: str) -> list[tuple[str, str]]:
    """(controller, path) pairs of a ``/proc/<pid>/cgroup``: ``""`` for the v2 hierarchy, each
    controller of a v1 one (``4:memory:/a/b``, ``7:cpu,cpuacct:/a``)."""
    out = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        out += [(c, path) for c in controllers.split(",")] if controllers else [("", path)]
    return out


class TreeSampler:
    """Samples CPU (percent of one core) and RSS (bytes) of a process and its descendants.

    RSS summed over a tree counts a page shared by several of its processes once per process
    (the libraries, a Ray node's object store mapped into every worker): each time the sum
    reaches a new peak the sampler also reads the tree's PSS (each shared page divided among
    the processes that map it, from ``/proc/<pid>/smaps_rollup``), ``pss_at_rss_peak``, and
    its unique resident memory, ``unique_at_rss_peak``: every physical page mapped by any of
    its processes counted once (:func:`tree_unique`), which is what a memory cgroup charges
    for the tree's mapped memory when the tree is alone in it (a container's limit). PSS can
    only undercount that (a library page shared with a process outside the tree is divided
    with it), the RSS sum only overcount it. Both walk every mapping of every process (a Ray
    node: ~0.2 s of CPU), so they are read at a new peak only, not during the first
    ``BURST_SAMPLES`` samples, and at most once every ``_READ_EVERY`` seconds unless the sum
    has grown by ``_READ_GROWTH`` since the last reading; a peak left unread is read by the
    closing sample. So a figure belongs to a peak at most that far below or before the RSS
    peak, or to the end of a phase that peaked in its burst.

    Adaptive: its first ``BURST_SAMPLES`` samples come every ``BURST_INTERVAL``, then every
    ``min(interval, FIRST_INTERVAL)``, so that even a short compute phase gets 10 samples
    (the tree it samples is rescanned once a second only: a tick reads a few /proc files per
    process); each time it holds ``MAX_POINTS`` points it merges neighbours
    and doubles the interval, so a long one stays cheap and bounded. The summary figures
    (mean, peak) are kept over every sample taken, not over the merged points.

    ``cgroup``: the memory cgroup that holds the tree (a worker's container,
    :meth:`CgroupMemory.of_worker_container`): every sample also reads its working set (two
    small files), and ``container_working_set_peak`` is the highest; None without one."""

    def __init__(self, root_pid: int | None = None, interval: float = 0.1,
                 include_root: bool = True, cgroup: CgroupMemory | None = None):
        self.root_pid = root_pid or os.getpid()
        self.cgroup = cgroup
        self.interval = min(interval, FIRST_INTERVAL)
        self.include_root = include_root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._points: list[list[float]] = []  # [t, cpu, rss]
        self._n = 0
        self._cpu_sum = self._rss_sum = 0.0
        self._cpu_peak = 0.0
        self._rss_peak = 0
        self._pss_at_peak: int | None = None
        self._unique_at_peak: int | None = None
        self._ws_peak: int | None = None
        self._read_rss, self._read_t = 0, -_READ_EVERY  # the RSS sum and time of that reading
        self._peak_unread = False
        self._last: dict[int, float] = {}
        self._last_t = self._t0 = 0.0
        self._tree: list[psutil.Process] = []
        self._tree_t = -_TREE_REFRESH

    def _procs(self, now: float) -> list[psutil.Process]:
        if now - self._tree_t < _TREE_REFRESH and self._tree:
            return self._tree
        try:
            root = psutil.Process(self.root_pid)
            procs: list[psutil.Process] = root.children(recursive=True)
            self._tree = ([root] if self.include_root else []) + procs
        except psutil.Error:
            self._tree = []
        self._tree_t = now
        return self._tree

    def _tick(self, record: bool, closing: bool = False) -> None:
        now = time.perf_counter()
        cpu_total, rss_total, seen = 0.0, 0, {}
        for p in self._procs(now):
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
                new_peak = rss_total > self._rss_peak
                self._peak_unread |= new_peak
                # Not during the burst (a read takes longer than its 0.01 s ticks), nor more
                # often than the limits; a peak left unread is read by the closing sample.
                if self._peak_unread and (closing or (
                        new_peak and self._n >= BURST_SAMPLES
                        and (now - self._read_t >= _READ_EVERY
                             or rss_total > _READ_GROWTH * self._read_rss))):
                    self._pss_at_peak, self._unique_at_peak = tree_memory(self._tree)
                    self._read_rss, self._read_t = rss_total, now
                    self._peak_unread = False
                self._add(now - self._t0, 100.0 * cpu_total / dt, rss_total)
                ws = self.cgroup.working_set() if self.cgroup is not None else None
                if ws is not None and (self._ws_peak is None or ws > self._ws_peak):
                    self._ws_peak = ws
        self._last, self._last_t = seen, now

    def _add(self, t: float, cpu: float, rss: int) -> None:
        self._n += 1
        self._cpu_sum += cpu
        self._rss_sum += rss
        self._cpu_peak = max(self._cpu_peak, cpu)
        self._rss_peak = max(self._rss_peak, rss)
        self._points.append([round(t, 4), round(cpu, 2), rss])
        if len(self._points) >= MAX_POINTS:
            self._points = downsample(self._points, MAX_POINTS // 2)
            self.interval *= 2

    def _loop(self) -> None:
        while not self._stop.wait(BURST_INTERVAL if self._n < BURST_SAMPLES
                                  else self.interval):
            self._tick(record=True)

    def start(self) -> None:
        self._points, self._n = [], 0
        self._cpu_sum = self._rss_sum = self._cpu_peak = 0.0
        self._rss_peak = 0
        self._pss_at_peak = self._unique_at_peak = self._ws_peak = None
        self._read_rss, self._read_t = 0, -_READ_EVERY
        self._peak_unread = False
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._tick(record=False)
        self._thread = threading.Thread(target=self._loop, name="testbed-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._tick(record=True, closing=True)  # so short runs still get a figure
        n = self._n
        return {
            "cpu_mean": self._cpu_sum / n if n else None,
            "cpu_peak": self._cpu_peak if n else None,
            "rss_mean": int(self._rss_sum / n) if n else None,
            "rss_peak": self._rss_peak if n else None,
            "pss_at_rss_peak": self._pss_at_peak if n else None,
            "unique_at_rss_peak": self._unique_at_peak if n else None,
            "container_working_set_peak": self._ws_peak if n else None,
            "samples": n,
            "interval_s": self.interval,
            "timeline": downsample(self._points, TIMELINE_POINTS),
        }


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = np.uint64(1 << 63)  # /proc/<pid>/pagemap: bit 63 page present, bits 0-54 its PFN
_PFN = np.uint64((1 << 55) - 1)
# A mapping in /proc/<pid>/smaps: its header line ("start-end perms ..."), then field lines (each
# "Name: value") down to its resident kilobytes.
_MAPPING_RSS = re.compile(rb"^([0-9a-f]+)-([0-9a-f]+) [^\n]*\n(?:[A-Z][^\n]*\n)*?Rss:\s+(\d+)",
                          re.M)


def tree_memory(procs: list[psutil.Process]) -> tuple[int | None, int | None]:
    """(PSS, unique) of ``procs``, read process by process (each process's two figures a
    moment apart). PSS: the summed PSS from ``/proc/<pid>/smaps_rollup``; None where the kernel
    does not report it, or a process this user may not read. Unique: the bytes of the distinct
    physical pages ``procs`` map (each counted once however many of them map it), from
    ``/proc/<pid>/pagemap`` (Documentation/admin-guide/mm/pagemap.rst) over the mappings
    ``/proc/<pid>/smaps`` shows resident; None where the kernel withholds page frame numbers
    (since Linux 4.2 only a reader with CAP_SYS_ADMIN gets them: a non-root user, an
    unprivileged container) or a process cannot be read."""
    pss: int | None = 0
    frames: list[Any] | None = [] if _pfns_visible() else None
    for p in procs:
        try:
            if pss is not None:
                pss += int(getattr(p.memory_full_info(), "pss", None) or 0)
        except psutil.NoSuchProcess:
            continue  # ended since the scan: it holds nothing now
        except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pss = None
        try:
            if frames is not None:
                frames.extend(_frames(p.pid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended between the two reads
        except OSError:
            frames = None  # (its PSS may still count)
    if frames is None:
        return pss, None
    pfns = np.concatenate(frames) if frames else np.empty(0, np.uint64)
    pfns.sort()
    return pss, int(pfns.size and 1 + np.count_nonzero(pfns[1:] != pfns[:-1])) * _PAGE


@functools.cache
def _pfns_visible() -> bool:
    """Whether pagemap shows this process page frame numbers (it zeroes them for a reader
    without CAP_SYS_ADMIN): read for a page of its own just written."""
    page = np.ones(_PAGE // 8 * 2, np.uint64)  # two pages' worth: one is wholly inside
    addr = page.ctypes.data // _PAGE * _PAGE + _PAGE
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            pagemap.seek(addr // _PAGE * 8)
            entry = int.from_bytes(pagemap.read(8), "little")
    except OSError:
        return False
    return bool(entry & int(_PRESENT)) and entry & int(_PFN) != 0


def tree_unique(procs: list[psutil.Process]) -> int | None:
    """The unique memory of ``procs`` (see :func:`tree_memory`)."""
    return tree_memory(procs)[1]


def _frames(pid: int) -> list[Any]:
    """The PFNs of the resident pages of ``pid``'s mappings (one array per mapping)."""
    out = []
    with open(f"/proc/{pid}/smaps", "rb") as smaps:
        text = smaps.read()
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for m in _MAPPING_RSS.finditer(text):
            if m.group(3) == b"0":
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            pagemap.seek(start // _PAGE * 8)
            entries = np.frombuffer(pagemap.read((end - start) // _PAGE * 8), np.uint64)
            out.append(entries[(entries & _PRESENT) != 0] & _PFN)
    return out


def downsample(points: list[list[float]], limit: int) -> list[list[float]]:
    """At most ``limit`` points: consecutive points merged in equal groups (time and CPU
    averaged, RSS its group's peak, so a memory peak survives)."""
    if len(points) <= limit:
        return [list(p) for p in points]
    size = -(-len(points) // limit)  # ceil
    out = []
    for i in range(0, len(points), size):
        group = points[i:i + size]
        out.append([round(sum(p[0] for p in group) / len(group), 4),
                    round(sum(p[1] for p in group) / len(group), 2),
                    max(p[2] for p in group)])
    return out


def summarize_samples(cpu: list[float], rss: list[int]) -> dict[str, Any]:
    return {
        "cpu_mean": sum(cpu) / len(cpu) if cpu else None,
        "cpu_peak": max(cpu) if cpu else None,
        "rss_mean": int(sum(rss) / len(rss)) if rss else None,
        "rss_peak": max(rss) if rss else None,
        "samples": len(cpu),
        "timeline": [],
    }


def combine_workers(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster-level figures. The explicit keys say what each is; the short ones (``cpu_mean``,
    ``cpu_peak``, ``rss_peak``, ``rss_total_peak``) are kept for older readers and equal them:
    CPU summed over workers (each worker's mean, each worker's peak), RSS the highest worker's
    peak and the sum of the workers' peaks."""
    cpu, peak, rss, pss, unique, ws, intervals = (
        [w[key] for w in workers if w.get(key) is not None]
        for key in ("cpu_mean", "cpu_peak", "rss_peak", "pss_at_rss_peak", "unique_at_rss_peak",
                    "container_working_set_peak", "interval_s"))
    samples = [int(w.get("samples") or 0) for w in workers]
    each = max(20, min(TIMELINE_POINTS, TIMELINE_TOTAL // max(1, len(workers))))
    for w in workers:
        if len(w.get("timeline") or []) > each:
            w["timeline"] = downsample(w["timeline"], each)
    out = {
        "workers": workers,
        "cpu_mean_sum_of_workers": sum(cpu) if cpu else None,
        "cpu_peak_sum_of_workers": sum(peak) if peak else None,
        "rss_peak_max_worker": max(rss) if rss else None,
        "rss_peak_sum_of_workers": sum(rss) if rss else None,
        "pss_at_rss_peak_max_worker": max(pss) if pss else None,
        "unique_at_rss_peak_max_worker": max(unique) if unique else None,
        "container_working_set_peak_max_worker": max(ws) if ws else None,
        "samples_min_worker": min(samples) if samples else 0,
        "interval_s": max(intervals) if intervals else None,
    }
    out.update(cpu_mean=out["cpu_mean_sum_of_workers"], cpu_peak=out["cpu_peak_sum_of_workers"],
               rss_peak=out["rss_peak_max_worker"], rss_total_peak=out["rss_peak_sum_of_workers"])
    return out


# A sampler per worker process, driven through the framework (Dask's client.run).
_WORKER_SAMPLER: dict[str, TreeSampler] = {}


def worker_start_sampling(interval: float = 0.1, dask_worker: Any = None) -> int:
    """``dask_worker``: distributed's ``client.run`` passes the worker (unused here)."""
    old = _WORKER_SAMPLER.pop("sampler", None)
    if old is not None:
        old.stop()
    s = _WORKER_SAMPLER["sampler"] = TreeSampler(os.getpid(), interval,
                                                 cgroup=CgroupMemory.of_worker_container())
    s.start()
    return os.getpid()


def worker_stop_sampling(dask_worker: Any = None) -> dict[str, Any]:
    s = _WORKER_SAMPLER.pop("sampler", None)
    out = s.stop() if s is not None else summarize_samples([], [])
    out["pid"] = os.getpid()
    out["host"] = socket.gethostname()
    return out


# --------------------------------------------------------------------------------------------
# The machine during a trial: was anything else using it?
# --------------------------------------------------------------------------------------------

BUSY_OTHER_CPU = 50.0
"""Percent of one core used by processes outside the trial above which a trial ran busy."""
BUSY_STEAL = 5.0
"""Percent of the machine's CPU time stolen by the hypervisor above which a trial ran busy."""
_STEAL_WINDOW = 0.1
"""Seconds over which the steal before a trial is measured."""


def _cpu_split(t: Any) -> tuple[float, float, float]:
    """(busy, steal, total) seconds of a ``psutil.cpu_times()`` (every CPU together; guest
    time is already inside user time on Linux)."""
    busy = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    idle = t.idle + getattr(t, "iowait", 0.0)
    steal = getattr(t, "steal", 0.0)
    return busy, steal, busy + idle + steal


def _steal_percent(a: Any, b: Any) -> float | None:
    (_, s0, t0), (_, s1, t1) = _cpu_split(a), _cpu_split(b)
    return round(100.0 * (s1 - s0) / (t1 - t0), 2) if t1 > t0 else None


def _load() -> dict[str, float | None]:
    try:
        l1, l5, _ = os.getloadavg()
    except OSError:
        return {"load1": None, "load5": None}
    return {"load1": round(l1, 2), "load5": round(l5, 2)}


def _tree_cpu(roots: list[int]) -> dict[int, float]:
    """CPU seconds of each process under ``roots`` (their reaped children's included)."""
    out: dict[int, float] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            out[p.pid] = t.user + t.system + t.children_user + t.children_system
    return out


def busy_rule(other_cpu_percent: float | None, steal_percent: float | None
              ) -> tuple[bool, str | None]:
    """Whether a trial ran on a busy machine, and why: other processes used more than
    ``BUSY_OTHER_CPU`` percent of one core, or the hypervisor stole more than ``BUSY_STEAL``
    percent of the CPU. (Not the load average: a previous trial's load lingers in it.)"""
    reasons = []
    if other_cpu_percent is not None and other_cpu_percent > BUSY_OTHER_CPU:
        reasons.append(f"other processes used {other_cpu_percent:.0f}% of a core "
                       f"(> {BUSY_OTHER_CPU:.0f}%)")
    if steal_percent is not None and steal_percent > BUSY_STEAL:
        reasons.append(f"steal {steal_percent:.1f}% (> {BUSY_STEAL:.0f}%)")
    return bool(reasons), "; ".join(reasons) or None


class MachineWatch:
    """The machine before and after a trial (``record["machine"]``).

    ``before``/``after``: the load averages, and the steal (percent of all CPU time) over the
    0.1 s before the trial / over the trial. ``other_cpu_percent``: CPU time used during the
    trial by processes that are not the driver's process tree (which holds a local cluster's
    processes) or ``roots``, in percent of one core; None where the workers are elsewhere (a
    cluster we connected to: its pods may share this node). ``busy``: see :func:`busy_rule`."""

    POLL = 0.25
    """Seconds between looks at the process tree during the trial. A process that exits is
    gone from the tree, and its CPU time reaches its parent's ``children_*`` times only if
    the parent waits for it: Ray's raylet does not, so the CPU of every Ray Train or Tune
    worker that finished inside the trial was counted as another process's. The watch keeps
    the last CPU time it saw of every process, so only what a process used in its last
    ``POLL`` seconds can be missed."""

    def __init__(self, roots: list[int] | None = None, count_others: bool = True):
        self.roots = [os.getpid(), *(roots or [])]
        self.count_others = count_others
        self._before: dict[str, Any] = {}
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _look(self) -> None:
        for pid, cpu in _tree_cpu(self.roots).items():
            self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL):
            self._look()

    def start(self) -> None:
        a = psutil.cpu_times()
        time.sleep(_STEAL_WINDOW)
        self._cpu0 = psutil.cpu_times()
        self._before = {**_load(), "steal_percent": _steal_percent(a, self._cpu0)}
        self._ours0 = _tree_cpu(self.roots) if self.count_others else {}
        self._seen = dict(self._ours0)
        self._t0 = time.perf_counter()
        if self.count_others:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="machine-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        cpu1 = psutil.cpu_times()
        wall = time.perf_counter() - self._t0
        steal = _steal_percent(self._cpu0, cpu1)
        other: float | None = None
        ours: float | None = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.count_others and wall > 0:
            self._look()
            ours = sum(v - self._ours0.get(pid, 0.0) for pid, v in self._seen.items())
            busy = _cpu_split(cpu1)[0] - _cpu_split(self._cpu0)[0]
            other = round(max(0.0, busy - ours) / wall * 100.0, 1)
        flag, reason = busy_rule(other, steal)
        return {"before": self._before, "after": {**_load(), "steal_percent": steal},
                "other_cpu_percent": other, "busy": flag, "busy_reason": reason,
                "seconds": round(wall, 3),
                "own_cpu_seconds": None if ours is None else round(ours, 3)}


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
