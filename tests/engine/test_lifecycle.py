"""Nothing a `testbed run` starts survives it: real signals to a real `testbed run` subprocess at
each moment (cluster start-up, a timed repeat, teardown), a second Ctrl-C, SIGKILL of the
testbed process (its watchdog cleans up) and of the watchdog too (the next run removes the
leftovers, and nothing else). Each test then checks with psutil that no process carrying the
run's marker exists."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.lifecycle import MARKER_ENV, marked_processes, owner_alive, remove_leftovers
from bench.results import read_records

pytestmark = pytest.mark.slow

TESTBED = str(Path(sys.executable).parent / "testbed")


class Run:
    """A `testbed run` subprocess whose stderr status lines are read as they come."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
        self.out = tmp_path / "results.jsonl"
        self.proc = subprocess.Popen(
            [TESTBED, "run", "--no-baselines", "--out", str(self.out), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        # Our marker: the owner's pid and start time, as bench.lifecycle writes it.
        self.marker = f"{self.proc.pid}:{int(psutil.Process(self.proc.pid).create_time() * 1000)}"

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr}"
                continue
            if text in line:
                return
        raise AssertionError(f"no line with {text!r} in {timeout}s: {''.join(self.stderr)}")

    def ours(self) -> list[psutil.Process]:
        return [p for p, _ in marked_processes(self.marker)]

    def wait_for_processes(self, n: int, timeout: float = 120) -> None:
        _until(lambda: len(self.ours()) >= n, timeout, f"{n} marked processes")


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def _assert_gone_within(run: Run, seconds: float, since: float) -> float:
    """Every process of the run is gone within ``seconds`` of ``since``; returns when."""
    _until(lambda: not run.ours(), seconds + 1, "the run's processes to go")
    took = time.monotonic() - since
    assert took <= seconds, f"processes lived {took:.1f}s after the signal"
    return took


# (signal, framework, the line after which it is sent, expected exit status)
MOMENTS = [
    (signal.SIGINT, "ray", "starting ray with 2 worker(s)", 130),
    (signal.SIGTERM, "ray", "timing gridsearch on ray x2", 143),
    (signal.SIGHUP, "ray", "stopping ray x2", 129),
    (signal.SIGTERM, "dask", "starting dask with 2 worker(s)", 143),
    (signal.SIGHUP, "dask", "timing gridsearch on dask x2", 129),
    (signal.SIGINT, "dask", "stopping dask x2", 130),
]


@pytest.mark.parametrize(("sig", "framework", "after", "code"), MOMENTS,
                         ids=[f"{s.name}-{f}-{a.split()[0]}" for s, f, a, _ in MOMENTS])
def test_a_signal_at_any_moment_leaves_nothing_behind(tmp_path, sig, framework, after, code):
    # knn first: a finished trial whose record must survive; gridsearch runs long enough.
    run = Run(tmp_path, "-f", framework, "-w", "2", "-l", "knn,gridsearch", "--repeats", "3")
    run.wait_for_line(after)
    if after.startswith("starting"):
        run.wait_for_processes(1)  # mid start-up: some of the cluster exists, not all of it
    assert run.ours(), "the cluster's processes carry the run's marker"
    t0 = time.monotonic()
    run.proc.send_signal(sig)
    assert run.proc.wait(timeout=30) == code, "".join(run.stderr)
    took = _assert_gone_within(run, 10, t0)
    print(f"{sig.name} {framework} after {after!r}: exit {code}, clean after {took:.2f}s")
    assert f"interrupted by {sig.name}" in "".join(run.stderr)
    assert "Traceback" not in "".join(run.stderr)
    records = read_records(run.out) if run.out.exists() else []
    if not after.startswith("starting"):  # knn had finished: its record is on disk, whole
        assert [(r["workload"], r["state"]) for r in records][:1] == [("knn", "succeeded")]


def test_a_second_ctrl_c_exits_at_once_and_still_kills_the_cluster(tmp_path):
    run = Run(tmp_path, "-f", "ray", "-w", "2", "-l", "gridsearch", "--repeats", "5")
    run.wait_for_line("timing gridsearch on ray x2")
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    run.wait_for_line("SIGINT: stopping")
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=30) == 130
    _assert_gone_within(run, 10, t0)


def test_sigkill_of_testbed_its_watchdog_removes_the_cluster(tmp_path):
    run = Run(tmp_path, "-f", "ray", "-w", "2", "-l", "gridsearch", "--repeats", "5")
    run.wait_for_line("timing gridsearch on ray x2")
    assert len(run.ours()) > 3
    t0 = time.monotonic()
    run.proc.kill()
    run.proc.wait(timeout=10)
    took = _assert_gone_within(run, 30, t0)
    print(f"SIGKILL: the watchdog removed the cluster {took:.2f}s later")


def test_the_next_run_removes_leftovers_and_nothing_else(tmp_path):
    # A bystander of the user's, and one carrying the marker of a live owner (another
    # testbed run): neither may be touched.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    live_owner = f"{os.getpid()}:{int(psutil.Process().create_time() * 1000)}"
    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 env={**os.environ, MARKER_ENV: live_owner})
    try:
        run = Run(tmp_path, "-f", "dask", "-w", "2", "-l", "gridsearch", "--repeats", "5")
        run.wait_for_line("timing gridsearch on dask x2")
        # Kill the watchdog first, then testbed: the cluster is orphaned for real.
        watchdogs = [p for p in psutil.process_iter(["cmdline"])
                     if "--watch" in (p.info["cmdline"] or []) and run.marker in p.info["cmdline"]]
        assert len(watchdogs) == 1
        watchdogs[0].kill()
        run.proc.kill()
        run.proc.wait(timeout=10)
        leftovers = {p.pid for p in run.ours()}
        assert leftovers, "the orphaned cluster is still there"

        nxt = subprocess.run([TESTBED, "run", "-f", "local", "-w", "1", "-l", "knn",
                              "--no-baselines", "--repeats", "1", "--warmup", "0",
                              "--out", str(tmp_path / "next.jsonl")],
                             capture_output=True, text=True, timeout=300)
        assert nxt.returncode == 0, nxt.stderr
        assert f"left by an earlier testbed run (pid {run.proc.pid}, gone)" in nxt.stderr
        assert not run.ours()
        assert bystander.poll() is None and other_run.poll() is None
    finally:
        for p in (bystander, other_run):
            p.kill()
            p.wait()


def test_a_marked_process_in_another_pid_namespace_is_not_a_leftover():
    """A `testbed run` in a container on this host marks its processes with pids of the
    container's PID namespace; seen from here, that owner looks gone. The leftover sweep must
    leave them alone. A real PID namespace (util-linux ``unshare``, as a container runtime makes
    one): inside it, the marker names pid 1, its own init."""
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` (util-linux) to make a PID namespace")
    if os.geteuid() != 0:
        pytest.skip("making a PID namespace needs root (CI runs as root)")
    marker = "1:1"  # the container's pid 1; here, pid 1 started long before 1 ms past the epoch
    # Only the process inside the namespace carries the marker, as in a container.
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "env",
                              f"{MARKER_ENV}={marker}", sys.executable, "-c",
                              "import time; time.sleep(600)"])
    try:
        _until(lambda: psutil.Process(outer.pid).children(), 30, "the namespaced process")
        (inner,) = psutil.Process(outer.pid).children()
        _until(lambda: inner.environ().get(MARKER_ENV) == marker, 30, "its exec with the marker")
        assert os.readlink(f"/proc/{inner.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert not owner_alive(marker), "seen from here, its owner is gone"
        removed = remove_leftovers()
        assert inner.is_running() and inner.status() != psutil.STATUS_ZOMBIE, removed
        assert inner.pid not in {p.pid for p, _ in marked_processes()}
    finally:
        outer.kill()
        outer.wait()
