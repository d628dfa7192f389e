"""The operator's trial state machine: pure functions over Benchmark.status, fed with real
result records from the engine's runner."""
import copy
import json

import pytest

from bench.runner import run_benchmark
from bench.spec import parse_spec
from testbed_operator import trials as tr
from testbed_operator.crd import build_crd

SPEC = parse_spec({"frameworks": ["ray", "dask"], "workers": [1, 2],
                   "workloads": [{"name": "knn"}, {"name": "pca"}]})


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Real records: the runner's output for knn and pca (local engine, 1 and 2 threads)."""
    spec = parse_spec({"frameworks": ["local"], "workers": [1, 2], "baselines": False,
                       "repeats": 3, "workloads": [{"name": "knn"}, {"name": "pca"}]})
    out = tmp_path_factory.mktemp("r") / "r.jsonl"
    recs = run_benchmark(spec, str(out)).records
    return {w: [r for r in recs if r["workers"] == w] for w in (1, 2)}


def test_initial_status_plans_one_trial_per_framework_and_worker_count():
    s = tr.initial_status(SPEC)
    assert [(t["framework"], t["workers"], t["state"]) for t in s["trials"]] == [
        ("ray", 1, "Pending"), ("ray", 2, "Pending"),
        ("dask", 1, "Pending"), ("dask", 2, "Pending")]
    assert s["phase"] == "Pending" and s["progress"] == "0/4"
    assert s["workload"] == "knn,pca" and s["frameworks"] == "ray,dask"


def test_a_restarted_operator_resumes_the_running_trial_instead_of_starting_another():
    s = tr.start_trial(tr.initial_status(SPEC), 0)
    # The operator dies here; its successor reads the status back from the API (JSON).
    s = json.loads(json.dumps(s))
    assert tr.next_trial(s) == 0
    again = tr.start_trial(s, 0)
    assert again["trials"][0]["attempts"] == 1  # not started twice
    assert sum(t["state"] == "Running" for t in again["trials"]) == 1
    with pytest.raises(ValueError, match="trial 0 is Failed, cannot start it"):
        tr.start_trial(tr.finish_trial(again, 0, error="boom"), 0)


def test_results_land_in_the_status_with_a_summary(records):
    s = tr.initial_status(SPEC)
    for i, w in ((0, 1), (1, 2)):
        s = tr.start_trial(s, i)
        assert s["phase"] == "Running"
        s = tr.finish_trial(s, i, records[w])
    t = s["trials"][0]
    assert t["state"] == "Succeeded" and t["error"] is None
    knn = next(r for r in t["results"] if r["workload"] == "knn")
    assert len(knn["seconds"]) == 3 and knn["median"] > 0 and knn["quality"] > 0.9
    assert knn["qualityMetric"] == "accuracy" and knn["phases"]["distribute"] is not None
    assert s["progress"] == "2/4" and s["phase"] == "Running"
    rows = {(r["workload"], r["framework"], r["workers"]): r for r in s["summary"]}
    two = rows[("knn", "ray", 2)]
    assert two["speedup"] == pytest.approx(rows[("knn", "ray", 1)]["median"] / two["median"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    # Memory as the result keeps it: the largest worker's RSS peak; no pod figure off Kubernetes.
    res = next(r for r in s["trials"][1]["results"] if r["workload"] == "knn")
    assert two["memory"] == res["memory"] > 0 and two["podMemory"] is None
    # Delivering the same result twice changes nothing; a restart recomputes the same summary.
    assert tr.finish_trial(s, 1, records[2])["trials"] == s["trials"]
    reread = tr.refresh(json.loads(json.dumps(s)), "continue")
    assert reread["summary"] == s["summary"]


def test_all_trials_succeeded(records):
    s = tr.initial_status(SPEC)
    for i, t in enumerate(s["trials"]):
        s = tr.finish_trial(tr.start_trial(s, i), i, records[t["workers"]])
    assert s["phase"] == "Succeeded" and s["progress"] == "4/4"
    assert tr.next_trial(s) is None
    conds = {c["type"]: c for c in s["conditions"]}
    assert {k: (c["status"], c["reason"]) for k, c in conds.items()} == {
        "Running": ("False", "AllTrialsSucceeded"), "Succeeded": ("True", "AllTrialsSucceeded"),
        "Failed": ("False", "AllTrialsSucceeded")}
    assert s["currentTrial"] == ""


def _conds(s):
    return {c["type"]: c["status"] for c in s["conditions"]}


def test_conditions_tell_success_from_failure_like_metav1_conditions(records, monkeypatch):
    """Running / Succeeded / Failed, one each (the CRD merges them by type), shaped like
    metav1.Condition; lastTransitionTime moves only when a condition's status changes."""
    clock = iter(f"2030-01-01T00:00:{i:02d}Z" for i in range(60))
    monkeypatch.setattr(tr, "now", lambda: next(clock))
    s = tr.initial_status(SPEC)
    s["observedGeneration"] = 3
    s = tr.refresh(s, "continue")
    assert _conds(s) == {"Running": "False", "Succeeded": "False", "Failed": "False"}
    assert s["conditions"][0]["reason"] == "Pending"
    born = {c["type"]: c["lastTransitionTime"] for c in s["conditions"]}
    s = tr.start_trial(s, 0)
    assert _conds(s) == {"Running": "True", "Succeeded": "False", "Failed": "False"}
    assert s["currentTrial"] == "ray x1"
    after = {c["type"]: c["lastTransitionTime"] for c in s["conditions"]}
    assert after["Running"] != born["Running"]
    assert after["Succeeded"] == born["Succeeded"] and after["Failed"] == born["Failed"]
    for c in s["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime",
                          "observedGeneration"} and c["observedGeneration"] == 3
    s = tr.finish_trial(s, 0, error="RayJob x ended with jobStatus=FAILED")
    assert s["currentTrial"] == "" and _conds(s)["Running"] == "True"  # the rest still run
    for i in (1, 2, 3):
        s = tr.finish_trial(tr.start_trial(s, i), i, records[s["trials"][i]["workers"]])
    assert s["phase"] == "Failed"
    assert _conds(s) == {"Running": "False", "Succeeded": "False", "Failed": "True"}
    failed = next(c for c in s["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TrialFailed" and "jobStatus=FAILED" in failed["message"]
    # A status written by an older operator (a `Completed` condition) loses it.
    old = {**s, "conditions": [*s["conditions"], {"type": "Completed", "status": "True"}]}
    assert "Completed" not in {c["type"] for c in tr.refresh(old, "continue")["conditions"]}


def test_a_refused_benchmark_fails_once_with_its_reason():
    s = tr.failed_status("RunnerServiceAccountMissing", "no account", 2)
    assert s["phase"] == "Failed" and s["reason"] == "RunnerServiceAccountMissing"
    assert _conds(s) == {"Running": "False", "Succeeded": "False", "Failed": "True"}
    assert all(c["reason"] == "RunnerServiceAccountMissing" and c["observedGeneration"] == 2
               for c in s["conditions"])
    assert "observedGeneration" not in tr.failed_status("InvalidSpec", "x", None)["conditions"][0]


def test_failure_policy_continue_runs_the_rest_then_fails(records):
    s = tr.start_trial(tr.initial_status(SPEC), 0)
    s = tr.finish_trial(s, 0, error="cluster never ready after 600s")
    assert s["trials"][0]["state"] == "Failed" and tr.next_trial(s) == 1
    assert s["phase"] == "Running" and "ray x1: cluster never ready" in s["message"]
    for i in (1, 2, 3):
        s = tr.finish_trial(tr.start_trial(s, i), i, records[s["trials"][i]["workers"]])
    assert s["phase"] == "Failed" and s["progress"] == "4/4"


def test_failure_policy_stop_skips_the_rest(records):
    s = tr.start_trial(tr.initial_status(SPEC), 0)
    s = tr.finish_trial(s, 0, records[1])
    s = tr.start_trial(s, 1)
    bad = copy.deepcopy(records[2])
    bad[0].update(state="failed", error="KilledWorker: worker died 3 times")
    s = tr.finish_trial(s, 1, bad, policy="stop")
    assert [t["state"] for t in s["trials"]] == ["Succeeded", "Failed", "Skipped", "Skipped"]
    assert tr.next_trial(s, "stop") is None
    assert s["phase"] == "Failed" and "KilledWorker" in s["message"]


def test_a_runner_without_results_fails_its_trial():
    s = tr.finish_trial(tr.start_trial(tr.initial_status(SPEC), 0), 0, [])
    assert s["trials"][0]["error"] == "the runner produced no result records"


def test_the_status_fits_the_crd_status_schema(records):
    import jsonschema

    from support.k8s_emulator import openapi_to_jsonschema

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema))
    s = tr.finish_trial(tr.start_trial(tr.initial_status(SPEC), 0), 0, records[1])
    assert list(validator.iter_errors(json.loads(json.dumps(s)))) == []
    for refused in (tr.failed_status("InvalidSpec", "spec.workers: bad", 1),
                    tr.failed_status("RunnerServiceAccountMissing", "x" * 40000, None)):
        assert list(validator.iter_errors(refused)) == []
    # The conditions' schema is metav1.Condition's: a reason must be CamelCase, status an enum.
    bad = json.loads(json.dumps(s))
    bad["conditions"][0].update(reason="not a reason", status="Maybe")
    assert len(list(validator.iter_errors(bad))) == 2


def test_cluster_startup_runs_from_the_cluster_objects_creation_to_the_runners_ready_workers():
    """clusterStartupSeconds: the RayJob's (submittedAt) or the DaskCluster's (clusterCreatedAt)
    creation until the runner's first engine had N workers (environment.engine.ready_at)."""
    rec = lambda ready: {"environment": {"engine": {"ready_at": ready}}}  # noqa: E731
    created = "2026-01-01T00:00:00.250Z"
    t0 = 1767225600.25
    ray = {"submittedAt": created}
    assert tr.cluster_startup_seconds(ray, [rec(t0 + 12.5), rec(t0 + 40)]) == 12.5  # the first
    dask = {"clusterCreatedAt": created, "submittedAt": "2026-01-01T00:00:03.000Z"}
    assert tr.cluster_startup_seconds(dask, [rec(t0 + 7)]) == 7.0  # not from the runner Job
    assert tr.cluster_startup_seconds(dask, [{"environment": {}}, rec(None)]) is None
    assert tr.cluster_startup_seconds({}, [rec(t0)]) is None
    assert tr.cluster_startup_seconds(ray, [rec(t0 - 1)]) == 0.0  # clock skew: never negative
    assert tr.now(precise=True).endswith("Z") and "." in tr.now(precise=True)
