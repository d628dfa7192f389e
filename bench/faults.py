"""Fault injection: one extra run of a trial during which workers (and optionally the head) die.

The run is the trial's workload on the same cluster, data already distributed, after the timed
repeats.  At ``afterSeconds``, at ``afterFraction`` of the fault-free median, or once
``afterTasksFraction`` of the run's tasks have finished (counted through each task's future),
the victims, chosen with ``random.Random(seed)``, are killed:

* clusters the testbed started: SIGKILL of each victim's whole process tree (a Ray node's
  ``ray start``, raylet and workers; a Dask worker process, whose nanny then restarts it unless
  ``dask.nanny`` is false; the Ray head or Dask scheduler with ``killHead``);
* a connected cluster inside Kubernetes: the victims' pods are deleted (``bench.k8s_faults``;
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
from .results import describe
from .spec import BenchmarkSpec
from .workloads import Workload


def _error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:500]


def pick_victims(engine: Engine, kill_workers: int, kill_head: bool, seed: int) -> list:
    """The seeded choice of victims: K workers (sorted by name first, so the same seed picks
    the same workers on every run) plus the head when asked."""
    victims = engine.fault_victims()
    workers = sorted((v for v in victims if v.role == "worker"), key=lambda v: v.name)
    chosen = random.Random(seed).sample(workers, min(kill_workers, len(workers)))
    if kill_head:
        chosen += [v for v in victims if v.role == "head"][:1]
    return chosen


def faulted_run(engine: Engine, wl: type[Workload], state: Any, params: dict[str, Any],
                spec: BenchmarkSpec, rec: dict[str, Any]) -> dict[str, Any]:
    f = spec.faults
    assert f is not None
    median = describe(rec["seconds"])["median"]
    info: dict[str, Any] = {**f.model_dump(), "settings": engine.settings()}
    try:
        victims = pick_victims(engine, f.kill_workers, f.kill_head, f.seed)
    except Exception as e:  # e.g. the runner may not list its pods: say so, run nothing
        info["applicable"] = False
        info["reason"] = f"cannot find the victims: {_error_text(e)}"
        return info
    if not victims:
        info["applicable"] = False
        info["reason"] = ("the local baseline has no workers to kill" if engine.framework == "local"
                          else "the engine did not start these workers (a connected cluster "
                               "outside Kubernetes): there is nothing it may kill")
        return info
    info["applicable"] = True
    workers = sum(v.role == "worker" for v in victims)
    if f.kill_workers > workers:
        info["note"] = f"only {workers} worker(s) to kill"
    tasks_target = None
    if f.after_tasks_fraction is not None:
        per_run = int(rec.get("tasks") or 0)
        if not engine.counts_tasks or per_run == 0:
            info["applicable"] = False
            info["reason"] = (f"afterTasksFraction: {engine.framework} runs of {wl.name} submit "
                              "no tasks the engine can count; use afterSeconds or afterFraction")
            return info
        tasks_target = max(1, min(per_run - 1, math.ceil(f.after_tasks_fraction * per_run)))
        info["tasks_per_run"] = per_run
        info["kill_after_tasks"] = tasks_target
        delay = None
    elif f.after_seconds is not None:
        delay = f.after_seconds
    else:
        delay = f.after_fraction * (median or 0)
    info["delay_seconds"] = delay
    try:
        watch = engine.watch_faults()
    except Exception as e:  # observation is best effort; the fault itself still happens
        watch = None
        info["observed"] = {"observed": False, "reason": f"cannot observe: {_error_text(e)}"}

    killed: list[dict[str, Any]] = []
    tasks_done = [0]  # tasks finished so far in this run (afterTasksFraction only)
    done = threading.Event()
    box: dict[str, Any] = {}

    def kill() -> None:
        for v in victims:
            entry: dict[str, Any] = {"role": v.role, "name": v.name}
            try:
                v.kill()
                entry["at"] = time.perf_counter() - t0
                entry["at_wall"] = time.time()
            except Exception as e:  # already gone, or not ours to kill
                entry["error"] = _error_text(e)
            entry["run_still_going"] = not done.is_set()
            if tasks_target is not None:
                entry["tasks_done"] = tasks_done[0]
            killed.append(entry)

    def body() -> None:
        try:
            with engine.work_context():
                box["out"] = wl.run(engine, state, params)
        except BaseException as e:
            box["error"] = e
        finally:
            done.set()

    # A run can hang for good once its head is gone: give it the detection window plus three
    # fault-free medians, then record it as hung (the runner replaces the cluster afterwards).
    patience = (delay or 0) + f.detect_timeout_seconds + 3 * (median or 0) + 10
    trigger = threading.Event()
    if tasks_target is None:
        timer: threading.Thread = threading.Timer(delay, kill)
    else:
        lock = threading.Lock()

        def task_done() -> None:  # from the framework's callback threads
            with lock:
                tasks_done[0] += 1
                if tasks_done[0] == tasks_target:
                    trigger.set()

        def kill_on_trigger() -> None:
            trigger.wait()
            if "cancel" not in box:
                kill()

        engine.on_task_done = task_done
        timer = threading.Thread(target=kill_on_trigger, name="fault-trigger", daemon=True)
    runner = threading.Thread(target=body, name="faulted-run", daemon=True)
    t0 = time.perf_counter()
    timer.start()
    runner.start()
    runner.join(patience)
    info["seconds"] = time.perf_counter() - t0
    engine.on_task_done = None
    if isinstance(timer, threading.Timer):
        timer.cancel()
    elif not trigger.is_set():
        box["cancel"] = True  # the run ended before that many tasks: no kill
        trigger.set()
    timer.join()
    if tasks_target is not None and not killed:
        info["note"] = (f"the run ended after fewer than {tasks_target} finished tasks: "
                        "nothing was killed")
    if runner.is_alive():
        info["finished"] = False
        first_kill = min((k["at"] for k in killed if "at" in k), default=None)
        after = "" if first_kill is None else f" ({info['seconds'] - first_kill:.0f}s after the kill)"
        info["error"] = f"hung: no result {info['seconds']:.0f}s into the run{after}"
    elif "error" in box:
        info["finished"] = False
        info["error"] = _error_text(box["error"])
    else:
        info["finished"] = True
        info["quality"] = box["out"].quality
        matches = wl.matches(box["out"].quality, rec["quality"])
        info["quality_matches"] = all(matches.values()) if matches else None
    info["killed"] = killed
    info["killed_before_end"] = bool(killed) and all(
        "at" in k and k["run_still_going"] for k in killed)
    info["penalty_seconds"] = info["seconds"] - median if median is not None else None
    if watch is not None:
        try:
            info["observed"] = watch.report(killed, f.detect_timeout_seconds)
        except Exception as e:
            info["observed"] = {"observed": False, "reason": f"cannot observe: {_error_text(e)}"}
    return info
