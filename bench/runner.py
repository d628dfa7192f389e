"""The measuring harness: one trial = (workload, framework, workers) on one cluster.

For each (framework, workers) the engine starts (or connects to) a cluster once; each workload
then runs as its own trial on it:

1. ``distribute``: data into the cluster (timed: *distribute*);
2. ``warmup`` untimed runs (code loaded, caches warm, worker pools started);
3. ``repeats`` timed runs (*compute*), with CPU/memory sampled on every worker meanwhile
   (and, with ``artifacts``, the frameworks' own records of them saved beside the results);
4. optionally one faulted run (``spec.faults``, see ``bench.faults``): workers killed mid-run;
5. the record is appended to the results file at once.

Cluster start-up and dataset loading are timed once and stored with every record (the same
figure in each record of that cluster or run).  The machine's load, steal and the CPU used by
other processes are recorded around each trial (``machine``; see ``bench.measure``).  A trial
that fails or times out is recorded as failed with its reason; the run goes on.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .data import PartitionedData
from .datasets import LoadedData, load_dataset
from .engines import Engine, make_engine
from .engines.base import VictimSource
from .errors import RunError, TestbedError, UsageError
from .faults import faulted_run
from .frameworks import dask_scheduler, in_process
from .lifecycle import Interrupted, cancel_thread
from .measure import MachineWatch, combine_workers, environment
from .params import WORKLOADS
from .record import ResultRecord, new_record
from .results import append_record, describe
from .spec import BenchmarkSpec, WorkloadSpec
from .workloads import Workload, get_workload


@dataclass
class RunResult:
    run_id: str
    records: list[ResultRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[ResultRecord]:
        return [r for r in self.records if r["state"] != "succeeded"]


@dataclass
class TrialOutcome:
    """A trial's record, and whether its cluster must be restarted before the next workload
    (kept out of the record: it is the runner's business, not a result)."""

    record: ResultRecord
    restart: bool = False


# Timed-out trial threads that did not end when cancelled (in-process frameworks are never
# cancelled): the CLI exits hard when any is still running, after every record is on disk.
ABANDONED: list[threading.Thread] = []
# How long a timed-out trial's thread gets to end after TrialCancelled is raised in it, before
# it is abandoned and its cluster stopped under it.
CANCEL_GRACE_SECONDS = 10.0


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def check_workloads(spec: BenchmarkSpec, data: LoadedData) -> None:
    """Checks that need the loaded data (run before any cluster starts): each workload's
    ``checks`` in the registry (bench.params.WORKLOADS); on a partitioned dataset, that every
    workload can run on one."""
    for i, w in enumerate(spec.workloads):
        if isinstance(data, PartitionedData):
            if not WORKLOADS[w.name].partitioned:
                raise UsageError(
                    f"workloads.{i}.name: {w.name} needs in-memory data (dataset digits, "
                    f"synthetic, file or s3); dataset parquet ({data.uri}) is partitioned and "
                    f"read by the workers")
            continue  # the workload's distribute_partitioned checks what the manifest says
        for check in WORKLOADS[w.name].checks:
            problem = check(w.params, data)
            if problem is not None:
                field, message = problem
                raise UsageError(f"workloads.{i}.{field}: {message}")


def check_torch(spec: BenchmarkSpec) -> None:
    """The workloads that need torch find it (imported once here, not inside a timed phase)."""
    torch_workloads = [w.name for w in spec.workloads if WORKLOADS[w.name].needs_torch]
    if torch_workloads:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError(
                f"workloads: {', '.join(torch_workloads)} need torch, which is not installed "
                "here (the slim runner image has none: use the full image, "
                "testbed-runner:<tag>)") from None


def check_packages(spec: BenchmarkSpec) -> None:
    """The workloads' own libraries import here (``WorkloadInfo.packages``): a missing one
    fails the run before any cluster starts, with one line naming the package."""
    from importlib import import_module

    for i, w in enumerate(spec.workloads):
        for package in WORKLOADS[w.name].packages:
            try:
                import_module(package)
            except ImportError as e:
                raise UsageError(
                    f"workloads.{i}: {w.name} needs the Python package {package!r}, which "
                    f"cannot be imported here ({type(e).__name__}: {e}); install the "
                    "'libraries' extra (pip install 'testbed[libraries]')") from None


def unsupported(workload: str, framework: str) -> str | None:
    """Why ``workload`` cannot run on ``framework``, if it cannot: Dask's single-machine
    schedulers run only the workloads built on Dask collections."""
    if dask_scheduler(framework) is not None and not WORKLOADS[workload].dask_graphs:
        names = ", ".join(n for n, w in WORKLOADS.items() if w.dask_graphs)
        return (f"{workload} does not run on {framework}: Dask's single-machine schedulers "
                f"run only the workloads built on Dask collections ({names})")
    return None


def run_benchmark(
    spec: BenchmarkSpec,
    out: str,
    *,
    address: str | None = None,
    trials: Sequence[tuple[str, int]] | None = None,
    run_id: str | None = None,
    on_record: Callable[[ResultRecord], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    victims: VictimSource | None = None,
    connect_timeout: float | None = None,
    artifacts: bool | None = None,
    on_info: Callable[[str], None] | None = None,
) -> RunResult:
    """Run every trial of ``spec``; records are appended to ``out`` as they complete.
    ``victims``: what faults may kill in a cluster at ``address`` (see ``Engine.fault_victims``);
    ``connect_timeout``: how long to wait for the cluster at ``address`` to come up (a runner
    pod's cluster may still be starting), instead of the 2 minutes a ready cluster gets;
    ``artifacts``: save the frameworks' own records next to ``out`` (default: the spec's
    ``artifacts``; False skips them); ``on_info``: called with lines worth showing the user
    (each started cluster's dashboards)."""
    run_id = run_id or new_run_id()
    result = RunResult(run_id)
    status = on_status or (lambda _msg: None)
    env = environment()
    trials = trials if trials is not None else spec.trials()
    art_root = (os.path.splitext(out)[0] + "-artifacts"
                if (spec.artifacts if artifacts is None else artifacts) else None)

    status(f"loading dataset {spec.dataset.name}")
    t0 = time.perf_counter()
    data = load_dataset(spec.dataset)
    load_seconds = time.perf_counter() - t0
    check_workloads(spec, data)
    check_torch(spec)
    check_packages(spec)

    for framework, workers in trials:
        engine: Engine | None = None
        startup_error: str | None = None
        try:
            for j, wl in enumerate(spec.workloads):
                base = _base_record(spec, run_id, env, framework, workers, wl, data, load_seconds)
                try:
                    if startup_error is not None:
                        raise RunError(startup_error)
                    why = unsupported(wl.name, framework)
                    if why is not None:
                        raise RunError(why)
                    if engine is None:
                        status(f"starting {framework} with {workers} worker(s)")
                        candidate = _make_engine(spec, framework, workers, address, victims,
                                                 connect_timeout, dashboard=art_root is not None)
                        try:
                            candidate.start()
                        except TestbedError as e:
                            # Do not retry the same start for every workload: fail them all.
                            startup_error = f"{framework} x{workers} did not start: {e}"
                            raise RunError(startup_error) from None
                        engine = candidate
                        _announce(engine, on_info)
                    status(f"{wl.name} on {framework} x{workers}")
                    folder = (os.path.join(art_root, f"{framework}-x{workers}-{j}-{wl.name}")
                              if art_root is not None else None)
                    outcome = _run_trial(engine, wl, data, spec, base, status, folder)
                except TestbedError as e:
                    outcome = TrialOutcome(_failed(base, engine, str(e)), restart=True)
                except Exception as e:  # a workload or framework error: record it, keep going
                    outcome = TrialOutcome(_failed(base, engine, f"{type(e).__name__}: {e}",
                                                   traceback.format_exc()), restart=True)
                rec = outcome.record
                if outcome.restart and engine is not None:
                    _stop_quietly(engine)
                    engine = None
                append_record(out, rec)
                result.records.append(rec)
                if on_record:
                    on_record(rec)
                if rec.get("faults") and engine is not None and engine.started_cluster:
                    # Workers were killed: the next workload gets a fresh, whole cluster.
                    _stop_quietly(engine)
                    engine = None
        except Interrupted:
            # SIGINT/SIGTERM/SIGHUP (bench.lifecycle): the cluster goes at once, before the
            # exception does.
            if engine is not None:
                status(f"killing {framework} x{workers}")
                engine.kill()
                engine = None
            raise
        finally:
            if engine is not None:
                status(f"stopping {framework} x{workers}")
                _stop_quietly(engine)
    return result


def _make_engine(spec: BenchmarkSpec, framework: str, workers: int, address: str | None,
                 victims: VictimSource | None = None,
                 connect_timeout: float | None = None, dashboard: bool = False) -> Engine:
    res = spec.worker_resources
    engine = make_engine(
        framework, workers, None if in_process(framework) else address,
        cpus_per_worker=max(1.0, res.cpu_count()),
        memory_per_worker=res.memory_bytes(),
        startup_timeout=float(spec.timeout_seconds),
        ray_settings=spec.ray, dask_settings=spec.dask,
        observe_faults=spec.faults is not None,
        connect_timeout=connect_timeout, dashboard=dashboard,
    )
    engine.external_victims = victims
    return engine


def _announce(engine: Engine, on_info: Callable[[str], None] | None) -> None:
    """The dashboards of a cluster we started, while its trials run."""
    if on_info is not None and engine.started_cluster:
        for name, url in engine.dashboards().items():
            on_info(f"{engine.framework} x{engine.workers}: {name} dashboard {url}")


def _stop_quietly(engine: Engine) -> None:
    with contextlib.suppress(Exception):
        engine.stop()


def _base_record(spec: BenchmarkSpec, run_id: str, env: dict[str, Any], framework: str,
                 workers: int, wl: WorkloadSpec, data: LoadedData, load_seconds: float
                 ) -> ResultRecord:
    return new_record(
        run_id=run_id, benchmark=spec.name, framework=framework, workers=workers,
        workload=wl.name, params=wl.params, dataset=data.meta,
        quality_metric=get_workload(wl.name).quality_metric,
        environment=dict(env, worker_resources=spec.worker_resources.model_dump(),
                         repeats=spec.repeats, warmup=spec.warmup),
        load_seconds=load_seconds)


def _finish(rec: ResultRecord, engine: Engine | None) -> ResultRecord:
    rec["time"] = datetime.now(UTC).isoformat(timespec="seconds")
    stats = describe(rec["seconds"])
    rec["median"], rec["iqr"], rec["min"] = stats["median"], stats["iqr"], stats["min"]
    if engine is not None:
        rec["phases"]["startup"] = engine.startup_seconds
        rec["environment"]["engine"] = engine.describe()
        if in_process(engine.framework):
            rec["environment"]["threads"] = engine.workers
    return rec


def _failed(base: ResultRecord, engine: Engine | None, message: str,
            tb: str | None = None) -> ResultRecord:
    rec = base.copy()
    rec["state"] = "failed"
    rec["error"] = message.strip().splitlines()[0][:500] if message.strip() else "failed"
    if tb:
        rec["extra"] = dict(rec["extra"], traceback=tb[-4000:])
    return _finish(rec, engine)


def _run_trial(engine: Engine, wl_spec: WorkloadSpec, data: LoadedData, spec: BenchmarkSpec,
               base: ResultRecord, status: Callable[[str], None] = lambda _m: None,
               artifacts: str | None = None) -> TrialOutcome:
    """Run one trial under the spec's timeout; the body runs in a thread we can abandon. A
    failed trial's cluster is restarted before the next workload. ``artifacts``: the folder
    for the frameworks' own records of the timed runs (None: none are saved)."""
    rec = base.copy()
    rec["phases"] = base["phases"].copy()
    box: dict[str, Any] = {}
    started = time.perf_counter()

    def body() -> None:
        try:
            with engine.work_context():
                _trial_body(engine, get_workload(wl_spec.name), wl_spec.params, data, spec, rec,
                            status, artifacts)
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
            box["tb"] = traceback.format_exc()

    budget = max(0.0, spec.timeout_seconds - (engine.startup_seconds or 0.0))
    # Local clusters are the driver's children; a connected cluster's workers are elsewhere
    # (and may share this node), so nothing here tells them from other processes.
    watch = MachineWatch([p.pid for p in engine._procs], count_others=engine.address is None)
    watch.start()
    t = threading.Thread(target=body, name=f"trial-{wl_spec.name}", daemon=True)
    t.start()
    t.join(budget)
    rec["machine"] = watch.stop()
    if t.is_alive():
        startup, trial = engine.startup_seconds or 0.0, time.perf_counter() - started
        # Cancel the run in its thread, so that the framework cleans up its own work (Ray
        # Data's executor cancels its tasks) while the cluster is still there; a thread that
        # does not end in time is abandoned, and the caller stops the cluster under it. Either
        # way the cluster is restarted; partial timings are kept.
        if in_process(engine.framework) or not cancel_thread(t, CANCEL_GRACE_SECONDS):
            ABANDONED.append(t)
        msg = (f"timed out after {startup + trial:.0f}s "
               f"(timeoutSeconds={spec.timeout_seconds}: cluster start-up {startup:.0f}s, "
               f"the trial {trial:.0f}s; {len(rec['seconds'])} of "
               f"{spec.repeats} repeats done)")
        if in_process(engine.framework):
            raise RunError(f"{wl_spec.name} on {engine.framework} x{engine.workers}: {msg}; a "
                           f"{engine.framework} run cannot be interrupted, stopping")
        return TrialOutcome(_failed(rec, engine, msg), restart=True)
    if "error" in box:
        err = box["error"]
        if isinstance(err, UsageError):
            raise err
        if isinstance(err, TestbedError):
            return TrialOutcome(_failed(rec, engine, str(err)), restart=True)
        return TrialOutcome(_failed(rec, engine, f"{type(err).__name__}: {err}", box.get("tb")),
                            restart=True)
    rec["state"] = "succeeded"
    return TrialOutcome(_finish(rec, engine))


def _thread_pools() -> dict[str, int]:
    """Effective OpenMP/BLAS pool sizes as seen by the calling thread (the trial's)."""
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]  # (no stubs)

    out: dict[str, int] = {}
    for pool in threadpool_info():
        api = pool.get("user_api", "?")
        out[api] = max(out.get(api, 0), int(pool.get("num_threads") or 0))
    return out


def _trial_body(engine: Engine, wl: Workload, params: dict[str, Any], data: LoadedData,
                spec: BenchmarkSpec, rec: ResultRecord,
                status: Callable[[str], None] = lambda _m: None,
                artifacts: str | None = None) -> None:
    rec["environment"]["driver_threadpools"] = _thread_pools()
    t0 = time.perf_counter()
    state = (wl.distribute_partitioned(engine, data, params)
             if isinstance(data, PartitionedData) else wl.distribute(engine, data, params))
    rec["phases"]["distribute"] = time.perf_counter() - t0
    try:
        for _ in range(spec.warmup):
            t0 = time.perf_counter()
            wl.run(engine, state, params)
            rec["phases"]["warmup"].append(time.perf_counter() - t0)

        tasks_before = engine.tasks
        status(f"timing {rec['workload']} on {engine.framework} x{engine.workers}: "
               f"{spec.repeats} repeat(s)")
        if artifacts is not None:
            os.makedirs(artifacts, exist_ok=True)
        seconds = rec["seconds"]
        outcome = None
        with (engine.artifacts(artifacts) if artifacts is not None
              else contextlib.nullcontext({})) as saved:
            engine.start_sampling(spec.sample_interval)
            loop_start = time.perf_counter()
            try:
                for _ in range(spec.repeats):
                    t0 = time.perf_counter()
                    outcome = wl.run(engine, state, params)
                    seconds.append(time.perf_counter() - t0)
            finally:
                loop_wall = time.perf_counter() - loop_start
                workers = engine.stop_sampling()
        if artifacts is not None:
            if not saved:  # nothing this framework records (the baseline): no empty folder
                with contextlib.suppress(OSError):
                    os.rmdir(artifacts)
            # Paths relative to the results file's folder (<stem>-artifacts/<trial>/ in it).
            results_dir = os.path.dirname(os.path.dirname(os.path.abspath(artifacts)))
            rec["artifacts"] = {k: os.path.relpath(v, results_dir) for k, v in saved.items()}
        rec["phases"]["compute"] = list(seconds)
        rec["resources"] = combine_workers(workers)
        rec["tasks"] = (engine.tasks - tasks_before) // spec.repeats
        assert outcome is not None  # repeats >= 1 (the spec says so)
        rec["quality"] = outcome.quality
        rec["extra"] = dict(outcome.extra)
        if outcome.data is not None:
            rec["data"] = outcome.data
        rec["extra"]["harness_overhead_s"] = (loop_wall - sum(seconds)) / spec.repeats

        if spec.faults is not None:
            # (faulted_run's annotations say type[Workload] and dict: it takes this instance
            # and reads this record by key.)
            rec["faults"] = faulted_run(engine, wl, state, params, spec, rec)
    finally:
        with contextlib.suppress(Exception):
            wl.release(engine, state)
