"""Fault injection on real local clusters: one of two workers is SIGKILLed mid-run.

What the record says is checked against the framework's own account (the Dask scheduler's
worker removals and task transitions, Ray's GCS node table and task attempts), against the
timeline of the run, and against negative controls (no retries allowed: the run must fail with
the framework's error), so a record that merely restates the configuration cannot pass.
"""
from __future__ import annotations

import pytest

from bench.engines import make_engine
from bench.errors import RunError
from bench.faults import pick_victims
from bench.kube.faults import pod_identity, pod_victims
from bench.results import read_records
from bench.runner import run_benchmark
from bench.spec import SpecError, parse_spec

# Sized so that a run lasts about a second and both workers are busy throughout: the kill at
# 40% of the fault-free median always catches a task in flight on the victim.
WORKLOADS = {
    "knn": ({"name": "synthetic", "samples": 60000, "features": 20},
            {"name": "knn", "params": {"chunks_per_worker": 8}}),
    "kmeans": ({"name": "synthetic", "samples": 60000, "features": 20},
               {"name": "kmeans", "params": {"n_init": 8, "max_iter": 300}}),
    "gridsearch": ({"name": "digits"}, {"name": "gridsearch"}),
}
# Fast node-death detection for Ray (the default, 3 s x 5, would make every test 15 s longer).
FAST_RAY = {"healthCheckPeriodMs": 500, "healthCheckFailureThreshold": 3}


def _faulted(tmp_path, framework: str, workload: str, **over) -> dict:
    dataset, wl = WORKLOADS[workload]
    spec = {"frameworks": [framework], "workers": [2], "baselines": False, "repeats": 2,
            "warmup": 1, "dataset": dataset, "workloads": [wl],
            "faults": {"killWorkers": 1, "afterFraction": 0.4, "seed": 1,
                       "detectTimeoutSeconds": 30},
            "ray": dict(FAST_RAY)}
    for key, value in over.items():
        spec[key] = dict(spec.get(key) or {}, **value) if isinstance(value, dict) else value
    out = tmp_path / "r.jsonl"
    result = run_benchmark(parse_spec(spec), str(out))
    (rec,) = read_records(out)
    assert rec == result.records[0]
    return rec


def _check_timeline(f: dict, rec: dict) -> None:
    assert f["applicable"] is True
    (victim,) = f["killed"]
    assert victim["role"] == "worker" and "error" not in victim
    # The kill happened on schedule and while the run was still going.
    assert f["delay_seconds"] == pytest.approx(0.4 * rec["median"])
    assert f["delay_seconds"] <= victim["at"] < f["seconds"]
    assert f["killed_before_end"] is True
    assert f["penalty_seconds"] == pytest.approx(f["seconds"] - rec["median"])


def _survived(tmp_path, framework: str, workload: str, settings: dict) -> tuple[dict, dict, dict]:
    """A faulted trial whose run finished with the fault-free answer: (record, faults,
    observed)."""
    rec = _faulted(tmp_path, framework, workload)
    f = rec["faults"]
    assert rec["state"] == "succeeded", rec["error"]
    _check_timeline(f, rec)
    assert f["settings"] == settings
    # The framework re-ran the victim's work on the survivor: same answer.
    assert f["finished"] is True and f["quality_matches"] is True, f
    assert f["observed"]["observed"] is True, f["observed"]
    return rec, f, f["observed"]


@pytest.mark.slow
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_dask_survives_a_killed_worker(tmp_path, workload):
    _, f, obs = _survived(tmp_path, "dask", workload, {"allowed_failures": 3, "nanny": True})
    # The scheduler itself removed exactly the worker we killed, after we killed it...
    assert obs["workers_removed"] == 1 and "undetected" not in obs
    assert 0 <= obs["detected_after_seconds"] < f["seconds"] - f["killed"][0]["at"] + 30
    # ...the nanny started a replacement under the same name...
    assert obs["replaced_after_seconds"] > obs["detected_after_seconds"]
    assert obs["replacement"] == {"by": "nanny", "expected": 1, "arrived": 1,
                                  "after_seconds": obs["replaced_after_seconds"]}
    # ...and the task that was running on it ran again.
    assert obs["recomputed_tasks"] >= 1
    assert obs["rescheduled_tasks"] + obs["lost_results"] >= 1
    assert obs["killed_worker_errors"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_ray_survives_a_killed_worker_node(tmp_path, workload):
    rec, _f, obs = _survived(tmp_path, "ray", workload, {
        "max_retries": 3, "health_check_period_ms": 500, "health_check_failure_threshold": 3,
        "auth_mode": "token"})
    # Ray's GCS marked the killed node dead, within the configured health checks (Ray's
    # default of 3 s x 5 would take about 15 s)...
    assert obs["workers_removed"] == 1 and "undetected" not in obs
    assert 0 < obs["node_dead_after_seconds"] < 6
    # ...the owner saw the in-flight task fail with NODE_DIED and retried it.
    assert obs["failed_by_error"].get("NODE_DIED", 0) >= 1
    assert obs["retried_tasks"] >= 1
    assert 0 <= obs["detected_after_seconds"] <= obs["node_dead_after_seconds"] + 1
    # Every attempt is a workload task or a retry of one. The count can fall short, never
    # over: each worker buffers its task events and sends them about once a second
    # (src/ray/core_worker/task_event_buffer.cc, task_events_report_interval_ms = 1000), so
    # the events of a task the victim ran just before the kill can die with it (a CI run on
    # a loaded machine listed 27 attempts for 27 tasks and 1 retry).
    assert rec["tasks"] // 2 < obs["task_attempts"] <= obs["retried_tasks"] + rec["tasks"]
    # Nothing brings a local Ray node back (on Kubernetes KubeRay would: see
    # tests/operator/test_operator_faults.py), and the record says so.
    assert obs["replacement"] == {"by": None, "expected": 0, "arrived": 0}
    assert obs["replaced_after_seconds"] is None


@pytest.mark.slow
def test_ray_without_retries_fails_with_node_died(tmp_path):
    rec = _faulted(tmp_path, "ray", "knn", ray={"maxRetries": 0})
    f = rec["faults"]
    _check_timeline(f, rec)
    assert f["settings"]["max_retries"] == 0
    assert f["finished"] is False and f["error"].startswith("NodeDiedError"), f
    assert "quality_matches" not in f
    obs = f["observed"]
    assert obs["retried_tasks"] == 0 and obs["failed_by_error"].get("NODE_DIED", 0) >= 1
    # The trial's own fault-free runs are unaffected: the trial succeeded.
    assert rec["state"] == "succeeded" and rec["quality"]["accuracy"] > 0.8


@pytest.mark.slow
def test_dask_without_allowed_failures_raises_killed_worker(tmp_path):
    rec = _faulted(tmp_path, "dask", "knn", dask={"allowedFailures": 0})
    f = rec["faults"]
    _check_timeline(f, rec)
    assert f["settings"] == {"allowed_failures": 0, "nanny": True}
    assert f["finished"] is False and f["error"].startswith("KilledWorker"), f
    assert f["observed"]["killed_worker_errors"] >= 1


@pytest.mark.slow
def test_dask_without_nanny_gets_no_replacement(tmp_path):
    rec = _faulted(tmp_path, "dask", "knn", dask={"nanny": False},
                   faults={"detectTimeoutSeconds": 3})
    f = rec["faults"]
    _check_timeline(f, rec)
    assert f["settings"]["nanny"] is False
    assert f["finished"] is True and f["quality_matches"] is True
    assert f["observed"]["workers_removed"] == 1
    assert f["observed"]["replaced_after_seconds"] is None
    assert f["observed"]["replacement"] == {"by": None, "expected": 0, "arrived": 0}


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["dask", "ray"])
def test_killing_the_head_is_recorded(tmp_path, framework):
    rec = _faulted(tmp_path, framework, "knn", faults={"killWorkers": 0, "killHead": True})
    f = rec["faults"]
    (victim,) = f["killed"]
    assert victim["role"] == "head" and victim["run_still_going"] is True
    # The head's record of the run went with it: the record says so instead of guessing.
    assert f["observed"]["observed"] is False and "killed" in f["observed"]["reason"]
    if framework == "dask":
        # The client's futures die with the scheduler.
        assert f["finished"] is False and "scheduler-connection-lost" in f["error"], f
    else:
        # Ray's tasks are owned by the driver, not the head: in-flight work can still finish,
        # or fail; either way the record holds what the run returned.
        assert ("error" in f) is (f["finished"] is False)


@pytest.mark.slow
def test_victims_are_chosen_by_the_seed(tmp_path):
    engine = make_engine("dask", 4, startup_timeout=120)
    engine.start()
    try:
        picks = {seed: [v.name for v in pick_victims(engine, 2, False, seed)]
                 for seed in range(8)}
        again = {seed: [v.name for v in pick_victims(engine, 2, False, seed)]
                 for seed in range(8)}
        with_head = pick_victims(engine, 1, True, 0)
    finally:
        engine.stop()
    assert picks == again
    assert all(len(set(p)) == 2 and set(p) <= {"w0", "w1", "w2", "w3"} for p in picks.values())
    assert len({tuple(p) for p in picks.values()}) > 1  # the seed does choose
    assert [v.role for v in with_head] == ["worker", "head"]


@pytest.mark.parametrize(("faults", "field"), [
    ({"killWorkers": 0}, "faults: nothing to kill"),
    ({"afterSeconds": 1, "afterFraction": 0.5}, "faults: give one of afterSeconds, afterFraction"),
    ({"afterFraction": 0.5, "afterTasksFraction": 0.5}, "not afterFraction and afterTasksFraction"),
    ({"afterTasksFraction": 1}, "faults.afterTasksFraction"),
    ({"afterFraction": 1.5}, "faults.afterFraction"),
    ({"killWorkers": -1}, "faults.killWorkers"),
    ({"detectTimeoutSeconds": 0}, "faults.detectTimeoutSeconds"),
])
def test_bad_fault_specs_name_the_field(faults, field):
    with pytest.raises(SpecError) as e:
        parse_spec({"faults": faults})
    assert field in str(e.value)


@pytest.mark.parametrize(("section", "body", "field"), [
    ("ray", {"maxRetries": -1}, "ray.maxRetries"),
    ("ray", {"healthCheckPeriodMs": 10}, "ray.healthCheckPeriodMs"),
    ("dask", {"allowedFailures": "many"}, "dask.allowedFailures"),
    ("dask", {"nany": True}, "dask.nany: unknown field"),
])
def test_bad_framework_settings_name_the_field(section, body, field):
    with pytest.raises(SpecError) as e:
        parse_spec({section: body})
    assert field in str(e.value)


def test_pod_victims_need_kubernetes_and_a_well_formed_target(monkeypatch):
    monkeypatch.delenv("TESTBED_FAULT_PODS", raising=False)
    assert pod_victims() == []  # outside Kubernetes: nothing to kill
    monkeypatch.setenv("TESTBED_FAULT_PODS", "{not json")
    with pytest.raises(RunError, match=r"\$TESTBED_FAULT_PODS is not JSON"):
        pod_victims()
    monkeypatch.setenv("TESTBED_FAULT_PODS", '{"namespace": "ns"}')
    with pytest.raises(RunError, match="missing workers, identity"):
        pod_victims()


def test_pods_are_named_as_the_framework_names_them():
    pod = {"metadata": {"name": "c-worker-abc"}, "status": {"podIP": "10.0.0.7"},
           "spec": {"containers": [{"env": [{"name": "DASK_WORKER_NAME", "value": "c-w-1"}]}]}}
    assert pod_identity(pod, "podIP") == "10.0.0.7"
    assert pod_identity(pod, "env:DASK_WORKER_NAME") == "c-w-1"
    assert pod_identity(pod, "env:OTHER") == "c-worker-abc"
    with pytest.raises(RunError, match="unknown identity 'uid'"):
        pod_identity(pod, "uid")


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["dask", "ray"])
def test_kill_after_a_fraction_of_the_tasks(tmp_path, framework):
    """afterTasksFraction: the kill waits for that share of the run's tasks to finish."""
    rec = _faulted(tmp_path, framework, "knn", faults={"afterFraction": None,
                                                       "afterTasksFraction": 0.5})
    f = rec["faults"]
    assert rec["state"] == "succeeded", (rec["error"], f)
    assert rec["tasks"] == 16 and f["tasks_per_run"] == 16 and f["kill_after_tasks"] == 8
    (victim,) = f["killed"]
    # Killed once 8 of the 16 tasks had finished (a few more may finish while it happens)
    # and before the run ended.
    assert 8 <= victim["tasks_done"] < 16 and victim["run_still_going"] is True, f
    assert f["delay_seconds"] is None and 0 < victim["at"] < f["seconds"]
    assert f["finished"] is True and f["quality_matches"] is True, f


@pytest.mark.slow
def test_kill_after_tasks_needs_an_engine_that_counts_them(tmp_path):
    # Dask-on-Ray hands whole Dask graphs to Ray's scheduler: no per-task handle to count.
    rec = _faulted(tmp_path, "dask-on-ray", "knn", faults={"afterFraction": None,
                                                          "afterTasksFraction": 0.5})
    f = rec["faults"]
    assert rec["state"] == "succeeded" and f["applicable"] is False
    assert "afterTasksFraction" in f["reason"] and "killed" not in f
