"""Operator metrics: re-exported from Benchmark.status and scraped over real HTTP on loopback."""
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_operator_trials import SPEC, records  # noqa: F401  (real runner records fixture)

from testbed_operator import trials as tr
from testbed_operator.metrics import OperatorMetrics

from support import free_port, make_record


def _scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def served():
    m = OperatorMetrics()
    port = free_port()
    server, _thread = m.serve(port)
    yield m, port
    server.shutdown()
    server.server_close()


def _sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def _one_trial(benchmark, spec, rec):
    """The status of one trial finished with ``rec``, metrics that observed it, their samples
    and the trial's labels."""
    s = tr.finish_trial(tr.start_trial(tr.initial_status(spec), 0), 0, [rec])
    m = OperatorMetrics()
    m.observe_status("ns", benchmark, s)
    got = {(x.name, tuple(sorted(x.labels.items()))): x.value
           for fam in m.registry.collect() for x in fam.samples}
    lbl = {"namespace": "ns", "benchmark": benchmark, "framework": rec["framework"],
           "workload": rec["workload"], "workers": str(rec["workers"])}
    return s, m, got, lbl


def test_trial_results_are_scraped_from_the_status(served, records):  # noqa: F811
    m, port = served
    s = tr.initial_status(SPEC)
    m.observe_status("bench", "digits", s)
    got = _scrape(port)
    assert _sample(got, "testbed_benchmarks", phase="Pending") == 1
    assert _sample(got, "testbed_trials", namespace="bench", benchmark="digits",
                   state="Pending") == 4
    for i, w in ((0, 1), (1, 2)):
        s = tr.finish_trial(tr.start_trial(s, i), i, records[w])
    m.observe_status("bench", "digits", s)
    m.first_trial_started(0.3)
    m.reconcile_error("bench", "digits")
    got = _scrape(port)
    lbl = {"namespace": "bench", "benchmark": "digits", "framework": "ray", "workload": "knn"}
    row = next(r for r in s["summary"] if r["workload"] == "knn" and r["workers"] == 2)
    assert (_sample(got, "testbed_trial_duration_seconds", **lbl, workers="2")
            == pytest.approx(row["median"]))
    assert (_sample(got, "testbed_trial_speedup", **lbl, workers="2")
            == pytest.approx(row["speedup"]))
    assert (_sample(got, "testbed_trial_efficiency_ratio", **lbl, workers="2")
            == pytest.approx(row["efficiency"]))
    assert _sample(got, "testbed_trials", namespace="bench", benchmark="digits",
                   state="Succeeded") == 2
    res = s["trials"][1]["results"][0]
    assert (_sample(got, "testbed_trial_cpu_cores", **lbl, workers="2")
            == pytest.approx(res["cpu"] / 100))  # the status keeps percent of one core
    assert _sample(got, "testbed_trial_memory_bytes", **lbl, workers="2") == res["memory"] > 0
    # Run by the runner on this machine, not in a worker pod: no pod figure, so no series
    # (not a 0 that a dashboard would plot).
    assert res["podMemory"] is None
    assert not [k for k in got if k[0] == "testbed_trial_pod_memory_bytes"]
    assert _sample(got, "testbed_trial_attempts", namespace="bench", benchmark="digits",
                   framework="ray", workers="2", trial="digits-ray-2") == 1
    assert _sample(got, "testbed_benchmarks", phase="Running") == 1
    assert _sample(got, "testbed_reconcile_errors_total", namespace="bench",
                   benchmark="digits") == 1
    assert _sample(got, "testbed_time_to_first_trial_seconds_count") == 1
    assert _sample(got, "testbed_time_to_first_trial_seconds_bucket", le="0.5") == 1


def test_a_new_process_rebuilds_the_same_series_and_deleted_benchmarks_disappear(records):  # noqa: F811
    s = tr.initial_status(SPEC)
    s = tr.finish_trial(tr.start_trial(s, 0), 0, records[1])
    first, second = OperatorMetrics(), OperatorMetrics()  # second: after an operator restart
    first.observe_status("bench", "digits", s)
    second.observe_status("bench", "digits", s)

    def series(m):
        return sorted((x.name, tuple(sorted(x.labels.items())), x.value)
                      for fam in m.registry.collect() for x in fam.samples
                      if x.name.startswith("testbed_trial"))
    assert series(first) == series(second) and series(first)
    second.forget("bench", "digits")
    assert series(second) == []


def test_per_task_overhead_of_the_tasks_workload_is_exported():
    from bench.spec import parse_spec

    spec = parse_spec({"frameworks": ["dask"], "workers": [1], "workload": {"name": "tasks"}})
    rec = make_record(workload="tasks", framework="dask", workers=1, seconds=[0.5, 0.6],
                      phases={}, metric="correct", quality=1.0,
                      resources={"cpu_mean": 90.0, "rss_peak": 10},
                      extra={"per_task_us_async": 2000.0, "per_task_us_sync": 12000.0,
                             "tasks_per_s": 500})
    s, m, got, lbl = _one_trial("t", spec, rec)
    assert s["trials"][0]["results"][0]["perTaskMicros"] == {"async": 2000.0, "sync": 12000.0}
    assert (_sample(got, "testbed_task_overhead_seconds", **lbl, mode="async")
            == pytest.approx(0.002))
    assert _sample(got, "testbed_task_overhead_seconds", **lbl, mode="sync") == pytest.approx(0.012)
    m.forget("ns", "t")
    assert not [k for k in ((x.name, x.labels) for fam in m.registry.collect() for x in fam.samples)
                if k[0].startswith(("testbed_task", "testbed_trial"))]


def test_a_worker_pods_working_set_is_in_the_status_and_exported():
    """A trial whose workers ran in the operator's pods: the largest pod's working set
    (bench.measure.CgroupMemory) reaches the status as ``podMemory`` and the metrics as
    ``testbed_trial_pod_memory_bytes``, beside the RSS figure; deleting the Benchmark drops
    both series."""
    from bench.spec import parse_spec

    spec = parse_spec({"frameworks": ["ray"], "workers": [2], "workload": {"name": "knn"}})
    mib = 2**20
    workers = [{"id": f"w{i}", "rss_peak": rss * mib, "container_working_set_peak": ws * mib}
               for i, (rss, ws) in enumerate(((650, 490), (659, 503)))]
    rec = make_record(workload="knn", framework="ray", workers=2, seconds=[1.0, 1.1],
                      resources={"workers": workers, "cpu_mean": 150.0,
                                 "rss_peak": 659 * mib,
                                 "container_working_set_peak_max_worker": 503 * mib})
    s, m, got, lbl = _one_trial("p", spec, rec)
    res = s["trials"][0]["results"][0]
    assert (res["memory"], res["podMemory"]) == (659 * mib, 503 * mib)
    (row,) = s["summary"]
    assert (row["memory"], row["podMemory"]) == (659 * mib, 503 * mib)
    assert _sample(got, "testbed_trial_pod_memory_bytes", **lbl) == 503 * mib
    assert _sample(got, "testbed_trial_memory_bytes", **lbl) == 659 * mib
    m.forget("ns", "p")
    assert not [x for fam in m.registry.collect() for x in fam.samples
                if x.name == "testbed_trial_pod_memory_bytes"]


def test_a_faulted_run_is_summarised_in_the_status_and_exported():
    from bench.spec import parse_spec

    spec = parse_spec({"frameworks": ["ray"], "workers": [2], "workload": {"name": "knn"},
                       "faults": {"killWorkers": 1}})
    faults = {"applicable": True, "finished": False, "seconds": 0.52, "penalty_seconds": -0.48,
              "error": "NodeDiedError: Task failed because the node it was running on is dead",
              "killed": [{"role": "worker", "name": "10.1.2.3", "at": 0.41},
                         {"role": "head", "name": "h", "error": "RunError: HTTP 403"}],
              "settings": {"max_retries": 0},
              "observed": {"observed": True, "detected_after_seconds": 0.04, "retried_tasks": 0,
                           "failed_by_error": {"NODE_DIED": 1}}}
    rec = make_record(workload="knn", framework="ray", workers=2, seconds=[1.0], phases={},
                      quality=0.9, resources={}, faults=faults)
    s, m, got, lbl = _one_trial("f", spec, rec)
    assert s["trials"][0]["results"][0]["fault"] == {
        "killed": ["10.1.2.3", "h (RunError: HTTP 403)"], "finished": False,
        "error": faults["error"], "seconds": 0.52, "penaltySeconds": -0.48,
        "detectedAfterSeconds": 0.04, "retriedTasks": 0, "settings": {"max_retries": 0}}
    assert _sample(got, "testbed_fault_penalty_seconds", **lbl) == pytest.approx(-0.48)
    assert _sample(got, "testbed_fault_detection_seconds", **lbl) == pytest.approx(0.04)
    assert _sample(got, "testbed_fault_retried_tasks", **lbl) == 0
    assert _sample(got, "testbed_fault_finished", **lbl) == 0
    m.forget("ns", "f")
    assert not [x for fam in m.registry.collect() for x in fam.samples
                if x.name.startswith("testbed_fault_")]


def test_metric_names_follow_prometheus_conventions_and_old_names_stay_one_release(
        served, records):  # noqa: F811
    """A real scrape: the new names (``_cores``, ``_ratio``), the deprecated aliases with the
    old values and a HELP that names the replacement, and no client_python ``_created``
    series (its counter and histogram would have them)."""
    m, port = served
    s = tr.initial_status(SPEC)
    for i, w in ((0, 1), (1, 2)):
        s = tr.finish_trial(tr.start_trial(s, i), i, records[w])
    m.observe_status("bench", "digits", s)
    m.reconcile_error("bench", "digits")
    m.first_trial_started(0.3)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "_created" not in text
    got = _scrape(port)
    lbl = {"namespace": "bench", "benchmark": "digits", "framework": "ray", "workload": "knn",
           "workers": "2"}
    cores = _sample(got, "testbed_trial_cpu_cores", **lbl)
    assert cores is not None and cores > 0
    assert _sample(got, "testbed_trial_cpu_percent", **lbl) == pytest.approx(100 * cores)
    ratio = _sample(got, "testbed_trial_efficiency_ratio", **lbl)
    assert ratio is not None and _sample(got, "testbed_trial_efficiency", **lbl) == ratio
    helps = dict(line.split(" ", 3)[2:] for line in text.splitlines()
                 if line.startswith("# HELP "))
    assert helps["testbed_trial_cpu_percent"].startswith("Deprecated")
    assert "testbed_trial_cpu_cores" in helps["testbed_trial_cpu_percent"]
    assert "testbed_trial_efficiency_ratio" in helps["testbed_trial_efficiency"]
    m.forget("bench", "digits")
    after = {name for name, _ in _scrape(port)}
    assert not after & {"testbed_trial_cpu_cores", "testbed_trial_cpu_percent",
                        "testbed_trial_efficiency", "testbed_trial_efficiency_ratio"}
