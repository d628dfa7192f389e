"""Nothing a run starts outlives it: a marker on every process, a watchdog, signals, leftovers.

Local clusters are process trees the engine starts in sessions of their own (so that a
terminal's Ctrl-C reaches only the ``testbed`` process, which then stops them in order).  The
price is that nothing else would stop them if ``testbed`` died, so:

* **Marker.** Every process an engine starts carries ``TESTBED_RUN_MARKER=<pid>:<start>`` in its
  environment: the pid and start time (ms) of the ``testbed`` process that owns it.  Ray's
  raylets and workers and Dask's nannies and workers inherit it from the process we start, so
  ``/proc/<pid>/environ`` tells, for any process on the host, whether it is ours and whose.
* **Watchdog.** With the first process it starts, the owner starts one small watchdog process
  (``python -m bench.lifecycle --watch``) holding the read end of a pipe whose write end only
  the owner holds.  When the owner dies, however it dies (SIGKILL included), the kernel closes
  the write end, the watchdog's read returns, and it kills every process carrying the owner's
  marker.  It also checks the owner every 2 s in case a forked child kept the pipe open.
* **Signals.** ``testbed run`` and ``testbed runner`` turn SIGINT, SIGTERM and SIGHUP into
  :class:`Interrupted` in the main thread: clusters are stopped on the way out (workers first),
  then every marked process left is killed; the exit status is 128 + the signal (130, 143,
  129).  A second signal kills every marked process at once and exits immediately.
* **Leftovers.** ``testbed run`` first removes marked processes whose owner is gone (a watchdog
  that was itself killed), and says so.  Processes without our marker, or whose owner still
  runs (another ``testbed run``), or in another PID namespace (a ``testbed run`` in a
  container on this host), are never touched.
* **Timeouts.** A trial runs in a thread of its own; when its time is up, :func:`cancel_thread`
  raises :class:`TrialCancelled` in that thread, so that the framework's own clean-up runs
  (Ray Data shuts its executor down and cancels its tasks) while the cluster is still there.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

MARKER_ENV = "TESTBED_RUN_MARKER"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A termination signal reached the testbed process (raised in its main thread)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class TrialCancelled(BaseException):
    """Raised inside a timed-out trial's thread by :func:`cancel_thread`. A BaseException, like
    KeyboardInterrupt, so that framework code which handles ``Exception`` lets it through while
    its ``finally`` and ``except BaseException`` clean-ups still run."""


def cancel_thread(thread: threading.Thread, grace: float) -> bool:
    """Raise :class:`TrialCancelled` in ``thread`` and wait up to ``grace`` seconds for it to
    end. True if it ended. The exception arrives at the thread's next Python instruction: a
    thread inside one long call into C (a blocking ``ray.get``, a BLAS kernel) sees it only
    when that call returns, so it may still be running after ``grace``."""
    import ctypes

    ident = thread.ident
    if ident is None or not thread.is_alive():  # never started or ended: nothing to raise in
        return True
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    n = set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(TrialCancelled))
    if n > 1:  # CPython's documented contract: undo if more than one thread state matched
        set_async_exc(ctypes.c_ulong(ident), None)
        return False
    thread.join(grace)
    return not thread.is_alive()


def _identity(pid: int) -> str | None:
    try:
        return f"{pid}:{int(psutil.Process(pid).create_time() * 1000)}"
    except psutil.Error:
        return None


class _ProcessState:
    """This process's lifecycle singletons (one testbed process: one marker, one watchdog, at
    most one active signal guard)."""

    def __init__(self) -> None:
        self.own: str | None = _identity(os.getpid())
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.pipe_w: int | None = None  # the write end of the watchdog's pipe
        self.active: SignalGuard | None = None


_STATE = _ProcessState()


def own_marker() -> str:
    """This process's marker value (what its clusters carry)."""
    own = _STATE.own
    if own is None or not own.startswith(f"{os.getpid()}:"):  # a fork of the importer
        own = _STATE.own = _identity(os.getpid())
    return own or f"{os.getpid()}:0"


def owner_alive(marker: str) -> bool:
    pid, _, _ = marker.partition(":")
    return pid.isdigit() and _identity(int(pid)) == marker


def _pid_namespace(pid: int | str) -> str | None:
    """The PID namespace of ``pid`` (``pid:[inode]``), or None where /proc cannot tell."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def marked_processes(marker: str | None = None) -> list[tuple[psutil.Process, str]]:
    """Processes on this host that carry a marker (``marker``'s only, if given), but not us.

    Only those in our own PID namespace: a marker's pid means nothing outside the namespace of
    the run that wrote it. A ``testbed run`` in a container (or a runner in a pod) on this host
    is seen here under other pids, so its owner would look gone and its cluster would be taken
    for leftovers."""
    me = os.getpid()
    ours = _pid_namespace("self")
    out = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        if ours is not None and _pid_namespace(p.pid) != ours:
            continue
        try:
            value = p.environ().get(MARKER_ENV)
        except (psutil.Error, OSError):
            continue
        if value and (marker is None or value == marker):
            out.append((p, value))
    return out


def terminate(procs: Sequence[psutil.Process], grace: float,
              send: Callable[[int], None] | None = None) -> None:
    """The one way a testbed stops processes: SIGTERM, up to ``grace`` seconds for them to
    exit, then SIGKILL whatever is left (``grace`` 0: SIGKILL at once).

    ``send(sig)`` delivers the signal instead of signalling each of ``procs`` (an engine signals
    the process groups it started); ``procs`` are what is waited for and killed.
    """
    sig = signal.SIGTERM if grace > 0 else signal.SIGKILL
    if send is not None:
        send(sig)
    else:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
    alive = list(procs)
    if grace > 0:
        _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=3)


def kill_marked(marker: str, grace: float = 2.0) -> int:
    """SIGTERM every process carrying ``marker``, SIGKILL what is left after ``grace`` seconds.

    Returns how many processes were found.  Repeats the sweep until none is found, since a
    Ray raylet or a Dask nanny may start a replacement while its siblings die.
    """
    seen: set[int] = set()
    for _ in range(5):
        procs = [p for p, _ in marked_processes(marker)]
        if not procs:
            break
        seen.update(p.pid for p in procs)
        terminate(procs, grace)
    return len(seen)


@dataclass
class Leftover:
    owner_pid: int
    processes: list[str]  # "pid name"


def remove_leftovers() -> list[Leftover]:
    """Kill marked processes whose owner is gone; returns what was removed, by owner."""
    by_owner: dict[str, list[psutil.Process]] = {}
    for p, value in marked_processes():
        if not owner_alive(value):
            by_owner.setdefault(value, []).append(p)
    out = []
    for marker, procs in by_owner.items():
        names = []
        for p in procs:
            try:
                names.append(f"{p.pid} {p.name()}")
            except psutil.Error:
                names.append(str(p.pid))
        kill_marked(marker, grace=1.0)
        out.append(Leftover(int(marker.split(":")[0]), names))
    return out


# -- the watchdog ------------------------------------------------------------------------------
_watchdog_lock = threading.Lock()


def ensure_watchdog() -> None:
    """Start this process's watchdog once (before its first cluster process)."""
    with _watchdog_lock:
        if _STATE.watchdog is not None and _STATE.watchdog.poll() is None:
            return
        r, w = os.pipe()  # both non-inheritable: only the watchdog gets r, only we keep w
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        try:
            _STATE.watchdog = subprocess.Popen(
                [sys.executable, "-m", "bench.lifecycle", "--watch", own_marker(), str(r)],
                pass_fds=(r,), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(r)
        if _STATE.pipe_w is not None:
            os.close(_STATE.pipe_w)
        _STATE.pipe_w = w


def spawn_env() -> dict[str, str]:
    """What every process an engine starts gets in its environment (and the watchdog started)."""
    ensure_watchdog()
    return {MARKER_ENV: own_marker()}


def _watch(marker: str, fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the owner's business
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while owner_alive(marker):
        ready, _, _ = select.select([fd], [], [], 2.0)
        if ready and not os.read(fd, 64):  # EOF: the owner is gone
            break
    kill_marked(marker, grace=2.0)


# -- signals -----------------------------------------------------------------------------------
class SignalGuard:
    """SIGINT/SIGTERM/SIGHUP become :class:`Interrupted`; a second one exits at once."""

    def __init__(self, on_second: Callable[[], None] | None = None):
        self.first: int | None = None
        self._on_second = on_second
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.first is None:
            self.first = signum
            # From here on the clusters die under their clients: Dask's and Ray's client
            # threads would log each closed connection with a traceback. We are exiting; our
            # own messages are prints.
            logging.disable(logging.CRITICAL)
            raise Interrupted(signum)
        try:
            sys.stderr.write(f"testbed: {signal.Signals(signum).name} again: killing everything "
                             "now\n")
            sys.stderr.flush()
        except Exception:
            pass
        kill_marked(own_marker(), grace=0)
        os._exit(128 + self.first)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
            _STATE.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        if _STATE.active is self:
            _STATE.active = None


def reassert_signal_handlers() -> None:
    """Put the active guard's handlers back after a library replaced them.

    ``ray.init`` installs ``sys.exit(signum)`` as the SIGTERM handler of its driver
    (``ray/_private/worker.py``, ``set_sigterm_handler``), which would skip our teardown.
    """
    guard = _STATE.active
    if guard is not None and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, guard._handle)


def cleanup_after_interrupt(grace: float = 2.0) -> int:
    """Kill whatever our clusters left (after the engines' own teardown); returns the count."""
    return kill_marked(own_marker(), grace=grace)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--watch":
        _watch(argv[1], int(argv[2]))
        return 0
    print("usage: python -m bench.lifecycle --watch MARKER FD (started by testbed itself)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover - the watchdog process
    sys.exit(main(sys.argv[1:]))
