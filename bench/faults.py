"""Fault injection: one extra run of a trial during which workers (and optionally the head) die.

The run is the trial's workload on the same cluster, data already distributed, after the timed
repeats.  At ``afterSeconds``, at ``afterFraction`` of the fault-free median, or once
``afterTasksFraction`` of the run's tasks have finished (counted through each task's future),
the victims, chosen with ``random.Random(seed)``, are killed:

* clusters the testbed started: SIGKILL of each victim's whole process tree (a Ray node's
  ``ray start``, raylet and workers; a Dask worker process, whose nanny then restarts it unless
  ``dask.nanny`` is false; the Ray head or Dask scheduler with ``killHead``);
* a connected cluster inside Kubernetes: the victims' pods are deleted (``bench.kube.faults``;
  the operator tells the runner which pods are its trial's).

The record (``rec["faults"]``) says what happened, measured, never assumed:

``finished``/``error``            did the run return, or which exception it raised;
``quality_matches``               its quality figure against the fault-free runs';
``seconds``/``penalty_seconds``   its wall time, and that minus the fault-free median;
``killed``                        each victim, its role and when it died (``at`` seconds into
                                  the run; with ``afterTasksFraction`` also ``tasks_done``, the
                                  run's tasks finished by then), or why it could not be killed;
``killed_before_end``             every kill happened while the run was still going;
``observed``                      the framework's own record of the faults: detection time,
                                  retried/recomputed tasks, failed attempts by error type (Ray's
                                  state API; a Dask scheduler plugin), or why it is unavailable;
``settings``                      the framework's fault-tolerance settings in effect.
"""
from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

from .engines import Engine
from .engines.base import FaultWatch, Victim
from .errors import error_summary
from .frameworks import in_process, is_baseline
from .record import ResultRecord
from .results import describe
from .spec import BenchmarkSpec, FaultSpec
from .workloads import Workload


def _why(e: BaseException) -> str:
    """What went wrong, in one line for the fault record."""
    return error_summary(e, limit=500)


def pick_victims(engine: Engine, kill_workers: int, kill_head: bool, seed: int) -> list[Victim]:
    """The seeded choice of victims: K workers (sorted by name first, so the same seed picks
    the same workers on every run) plus the head when asked."""
    victims = engine.fault_victims()
    workers = sorted((v for v in victims if v.role == "worker"), key=lambda v: v.name)
    chosen = random.Random(seed).sample(workers, min(kill_workers, len(workers)))
    if kill_head:
        chosen += [v for v in victims if v.role == "head"][:1]
    return chosen


def faulted_run(engine: Engine, wl: Workload, state: Any, params: dict[str, Any],
                spec: BenchmarkSpec, rec: ResultRecord) -> dict[str, Any]:
    """The fault record of one faulted run of ``wl`` (see the module docstring)."""
    f = spec.faults
    assert f is not None
    median = describe(rec["seconds"])["median"]
    info: dict[str, Any] = {**f.model_dump(), "settings": engine.settings()}
    victims = _victims(engine, f, info)
    if victims is None:
        return info
    trigger = _trigger(engine, wl, f, rec, median, info)
    if trigger is None:
        return info
    delay, tasks_target = trigger
    watch = _watch(engine, info)
    # A run can hang for good once its head is gone: give it the detection window plus three
    # fault-free medians, then record it as hung (the runner replaces the cluster afterwards).
    patience = (delay or 0) + f.detect_timeout_seconds + 3 * (median or 0) + 10
    run = _FaultedRun(engine, wl, state, params, victims, tasks_target)
    info["seconds"] = run.execute(delay, patience)
    if tasks_target is not None and not run.killed:
        info["note"] = (f"the run ended after fewer than {tasks_target} finished tasks: "
                        "nothing was killed")
    _outcome(info, run, wl, rec)
    info["penalty_seconds"] = info["seconds"] - median if median is not None else None
    if watch is not None:
        try:
            info["observed"] = watch.report(run.killed, f.detect_timeout_seconds)
        except Exception as e:
            info["observed"] = {"observed": False, "reason": f"cannot observe: {_why(e)}"}
    return info


def _victims(engine: Engine, f: FaultSpec, info: dict[str, Any]) -> list[Victim] | None:
    """The victims, or None when there are none (``info`` then says why)."""
    try:
        victims = pick_victims(engine, f.kill_workers, f.kill_head, f.seed)
    except Exception as e:  # e.g. the runner may not list its pods: say so, run nothing
        info["applicable"] = False
        info["reason"] = f"cannot find the victims: {_why(e)}"
        return None
    if not victims:
        info["applicable"] = False
        info["reason"] = ("the local baseline has no workers to kill"
                          if is_baseline(engine.framework)
                          else f"{engine.framework} runs in this process: no workers to kill"
                          if in_process(engine.framework)
                          else "the engine did not start these workers (a connected cluster "
                               "outside Kubernetes): there is nothing it may kill")
        return None
    info["applicable"] = True
    workers = sum(v.role == "worker" for v in victims)
    if f.kill_workers > workers:
        info["note"] = f"only {workers} worker(s) to kill"
    return victims


def _trigger(engine: Engine, wl: Workload, f: FaultSpec, rec: ResultRecord,
             median: float | None, info: dict[str, Any]) -> tuple[float | None, int | None] | None:
    """When to kill: ``(delay, None)`` seconds into the run, or ``(None, tasks)`` once that many
    of its tasks have finished; None when the trigger cannot apply (``info`` says why)."""
    if f.after_tasks_fraction is not None:
        per_run = int(rec.get("tasks") or 0)
        if not engine.counts_tasks or per_run == 0:
            info["applicable"] = False
            info["reason"] = (f"afterTasksFraction: {engine.framework} runs of {wl.name} submit "
                              "no tasks the engine can count; use afterSeconds or afterFraction")
            return None
        tasks_target = max(1, min(per_run - 1, math.ceil(f.after_tasks_fraction * per_run)))
        info["tasks_per_run"] = per_run
        info["kill_after_tasks"] = tasks_target
        info["delay_seconds"] = None
        return None, tasks_target
    if f.after_seconds is not None:
        delay = f.after_seconds
    else:
        assert f.after_fraction is not None  # FaultSpec: exactly one trigger is given
        delay = f.after_fraction * (median or 0)
    info["delay_seconds"] = delay
    return delay, None


def _watch(engine: Engine, info: dict[str, Any]) -> FaultWatch | None:
    try:
        return engine.watch_faults()
    except Exception as e:  # observation is best effort; the fault itself still happens
        info["observed"] = {"observed": False, "reason": f"cannot observe: {_why(e)}"}
        return None


class _FaultedRun:
    """One run of the workload in a thread, and the kill, on a timer or after N tasks."""

    def __init__(self, engine: Engine, wl: Workload, state: Any, params: dict[str, Any],
                 victims: list[Victim], tasks_target: int | None):
        self.engine, self.wl, self.state, self.params = engine, wl, state, params
        self.victims, self.tasks_target = victims, tasks_target
        self.killed: list[dict[str, Any]] = []
        self.tasks_done = 0  # tasks finished so far in this run (afterTasksFraction only)
        self.done = threading.Event()
        self.box: dict[str, Any] = {}
        self.trigger = threading.Event()
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.thread: threading.Thread | None = None

    def kill(self) -> None:
        for v in self.victims:
            entry: dict[str, Any] = {"role": v.role, "name": v.name}
            try:
                v.kill()
                entry["at"] = time.perf_counter() - self.t0
                entry["at_wall"] = time.time()
            except Exception as e:  # already gone, or not ours to kill
                entry["error"] = _why(e)
            entry["run_still_going"] = not self.done.is_set()
            if self.tasks_target is not None:
                entry["tasks_done"] = self.tasks_done
            self.killed.append(entry)

    def body(self) -> None:
        try:
            with self.engine.work_context():
                self.box["out"] = self.wl.run(self.engine, self.state, self.params)
        except BaseException as e:
            self.box["error"] = e
        finally:
            self.done.set()

    def task_done(self) -> None:  # from the framework's callback threads
        with self.lock:
            self.tasks_done += 1
            if self.tasks_done == self.tasks_target:
                self.trigger.set()

    def kill_on_trigger(self) -> None:
        self.trigger.wait()
        if "cancel" not in self.box:
            self.kill()

    def execute(self, delay: float | None, patience: float) -> float:
        """Run, kill on the trigger, wait at most ``patience`` seconds; the run's seconds."""
        if self.tasks_target is None:
            assert delay is not None
            timer: threading.Thread = threading.Timer(delay, self.kill)
        else:
            self.engine.on_task_done = self.task_done
            timer = threading.Thread(target=self.kill_on_trigger, name="fault-trigger",
                                     daemon=True)
        self.thread = threading.Thread(target=self.body, name="faulted-run", daemon=True)
        self.t0 = time.perf_counter()
        timer.start()
        self.thread.start()
        self.thread.join(patience)
        seconds = time.perf_counter() - self.t0
        self.engine.on_task_done = None
        if isinstance(timer, threading.Timer):
            timer.cancel()
        elif not self.trigger.is_set():
            self.box["cancel"] = True  # the run ended before that many tasks: no kill
            self.trigger.set()
        timer.join()
        return seconds

    @property
    def hung(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def _outcome(info: dict[str, Any], run: _FaultedRun, wl: Workload,
             rec: ResultRecord) -> None:
    """Did the run finish, with the right answer; what was killed, and when."""
    killed = run.killed
    if run.hung:
        info["finished"] = False
        first_kill = min((k["at"] for k in killed if "at" in k), default=None)
        after = ("" if first_kill is None
                 else f" ({info['seconds'] - first_kill:.0f}s after the kill)")
        info["error"] = f"hung: no result {info['seconds']:.0f}s into the run{after}"
    elif "error" in run.box:
        info["finished"] = False
        info["error"] = _why(run.box["error"])
    else:
        info["finished"] = True
        info["quality"] = run.box["out"].quality
        matches = wl.matches(run.box["out"].quality, rec["quality"])
        info["quality_matches"] = all(matches.values()) if matches else None
    info["killed"] = killed
    info["killed_before_end"] = bool(killed) and all(
        "at" in k and k["run_still_going"] for k in killed)
