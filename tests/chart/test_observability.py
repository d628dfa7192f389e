"""Grafana dashboard and Prometheus: every PromQL expression parses and names only metrics a
real run exposes (the operator's, a real local Ray cluster's, a real Dask cluster's); a real
Prometheus server scrapes the operator and answers queries with the trial results."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import promql_parser as pp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.spec import parse_spec
from testbed_operator import trials as tr
from testbed_operator.dashboard import (
    DASK_WORKER_MEM,
    DASK_WORKERS,
    RAY_CPU,
    RAY_MEM,
    UNITS,
    build_dashboard,
    dashboard_json,
)
from testbed_operator.metrics import OperatorMetrics

from support.operator_harness import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "testbed" / "dashboards" / "testbed.json"
SCRAPE_CONFIG = ROOT / "examples" / "prometheus" / "prometheus.yml"


def _double(x: int) -> int:  # a task for the real clusters (importable by their workers)
    return 2 * x


def expressions(dashboard: dict) -> list[str]:
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            out.append(m.group(1))
    return out


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            names.update([node.name] if node.name else
                         [m.value for m in node.matchers.matchers if m.name == "__name__"])
    pp.walk(pp.parse(expr), pre_visit=visit)
    return names


def used_labels(expr: str) -> dict[str, set[str]]:
    """metric -> the label names the expression matches on or groups its series by."""
    out: dict[str, set[str]] = {}

    def visit(node, groups: set[str]):
        if isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            groups = groups | set(node.modifier.labels)
        if isinstance(node, pp.VectorSelector) and node.name:
            out.setdefault(node.name, set()).update(
                {m.name for m in node.matchers.matchers} | groups)
        for child in ("expr", "lhs", "rhs", "param", "vector_selector"):
            sub = getattr(node, child, None)
            if sub is not None and not isinstance(sub, (str, int, float)):
                visit(sub, groups)
        for arg in getattr(node, "args", None) or []:
            visit(arg, groups)
    visit(pp.parse(expr), set())
    return out


def variable_labels(dashboard: dict) -> dict[str, set[str]]:
    """metric -> the labels the template variables read from it (``label_values(m, label)``)."""
    out: dict[str, set[str]] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m
            for name in metric_names(m.group(1)):
                out.setdefault(name, set()).add(m.group(2))
    return out


def sample_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample_labels(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


LIVE_METRICS = {RAY_CPU, RAY_MEM, DASK_WORKERS, DASK_WORKER_MEM}
# What Prometheus adds to every scraped series (a PodMonitor's target labels: its relabel
# rules, tests/support/prom_monitors.py), beside the series' own labels.
SCRAPE_LABELS = {"job", "instance", "__name__"}


def pod_monitor_target_labels() -> set[str]:
    """The labels the chart's PodMonitors put on every series they scrape."""
    from test_chart import render

    from support.prom_monitors import scrape_configs

    docs = render({"metrics": {"podMonitors": {"enabled": True}}})
    jobs = scrape_configs([d for d in docs if d["kind"] == "PodMonitor"], "/kubeconfig")
    per_job = [{r["target_label"] for r in j["relabel_configs"]
                if r.get("target_label") and not r["target_label"].startswith("__")}
               for j in jobs]
    return set.intersection(*per_job)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def operator_status():
    """A status as the operator builds it from runner records (knn and the tasks workload)."""
    spec = parse_spec({"frameworks": ["ray", "dask"], "workers": [1, 2],
                       "workloads": [{"name": "knn"}, {"name": "tasks"}]})
    s = tr.initial_status(spec)
    for i, t in enumerate(s["trials"]):
        recs = []
        for wl in ("knn", "tasks"):
            base = (1.0 if t["framework"] == "ray" else 1.2) / t["workers"]
            recs.append({"workload": wl, "framework": t["framework"], "workers": t["workers"],
                         "state": "succeeded", "seconds": [base, base * 1.01, base * 0.99],
                         "phases": {"startup": 1.0}, "quality_metric": "accuracy",
                         "quality": {"accuracy": 0.98},
                         "resources": {"cpu_mean": 95.0, "rss_peak": 2**28,
                                       "container_working_set_peak_max_worker": 3 * 2**26},
                         "extra": ({"per_task_us_async": 900.0, "per_task_us_sync": 3000.0}
                                   if wl == "tasks" else {}),
                         # The faulted run as bench.faults records it (see test_faults.py).
                         "faults": ({"applicable": True, "finished": True, "seconds": 2 * base,
                                     "penalty_seconds": base, "quality_matches": True,
                                     "killed": [{"role": "worker", "name": "w0", "at": 0.4}],
                                     "settings": {"max_retries": 3},
                                     "observed": {"observed": True, "detected_after_seconds": 0.05,
                                                  "retried_tasks": 1}}
                                    if wl == "knn" and t["workers"] == 2 else None)})
        s = tr.finish_trial(tr.start_trial(s, i), i, recs)
    return s


def operator_metrics() -> OperatorMetrics:
    m = OperatorMetrics()
    m.observe_status("bench", "cmp", operator_status())
    m.first_trial_started(0.2)
    m.reconcile_error("bench", "cmp")
    return m


def test_the_dashboard_file_is_generated_from_code():
    assert DASHBOARD.read_text() == dashboard_json()


def test_every_expression_parses_and_has_the_template_variables():
    d = build_dashboard()
    exprs = expressions(d)
    assert len(exprs) >= 20
    for e in exprs:
        assert metric_names(e), e  # parses (promql_parser raises otherwise) and names a metric
    assert {v["name"] for v in d["templating"]["list"]} >= {
        "namespace", "benchmark", "workload", "framework", "trial"}
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for topic in ("trial time", "speedup", "efficiency", "per-task overhead", "cpu", "memory",
                  "failed", "attempts", "trials by state"):
        assert topic in titles, topic
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        pp.parse("sum(rate(testbed_trials[5m])")  # the parser does reject bad PromQL


def test_every_panel_shows_one_unit_its_metrics_unit():
    """Each panel's metrics share one unit (``UNITS``), the panel's: no percent beside bytes."""
    panels = [p for p in build_dashboard()["panels"] if p.get("targets")]
    assert {n for p in panels for t in p["targets"] for n in metric_names(t["expr"])} == set(UNITS)
    for p in panels:
        units = {UNITS[n] for t in p["targets"] for n in metric_names(t["expr"])}
        assert units == {p["fieldConfig"]["defaults"]["unit"]}, (p["title"], units)
    live = [p for p in panels if any(metric_names(t["expr"]) & LIVE_METRICS for t in p["targets"])]
    assert len(live) == 4 and {p["fieldConfig"]["defaults"]["unit"] for p in live} == {
        "percent", "bytes", "short"}


def test_panels_follow_the_variables_and_live_panels_filter_on_the_monitors_labels():
    """Every per-trial panel, the live ones included, filters on namespace, benchmark and
    framework; the live ones on the trial too, through labels the chart's PodMonitors really
    put on the scraped series (their relabel rules, as the Prometheus Operator writes them)."""
    d = build_dashboard()
    targets = pod_monitor_target_labels()
    assert {"testbed_dev_benchmark", "testbed_dev_framework", "testbed_dev_trial",
            "namespace", "pod"} <= targets
    for p in d["panels"]:
        for t in p.get("targets", []):
            names = metric_names(t["expr"])
            if names & LIVE_METRICS:
                for var in ("$namespace", "$benchmark", "$framework", "$trial"):
                    assert var in t["expr"], (p["title"], var)
                for labels in used_labels(t["expr"]).values():
                    assert labels <= targets, (p["title"], labels - targets)
                assert set(re.findall(r"{{(\w+)}}", t["legendFormat"])) <= targets
            elif any(n.startswith(("testbed_trial_", "testbed_fault_", "testbed_task_"))
                     for n in names):
                for var in ("$namespace", "$benchmark", "$framework"):
                    assert var in t["expr"], (p["title"], var)


@pytest.mark.slow
def test_every_metric_in_the_dashboard_is_exposed_by_a_real_run():
    """Scrape the operator's metrics, a real local Ray cluster's nodes and a real Dask
    scheduler and worker after they ran tasks; the dashboard may only use those names, and
    only labels those series have (or the PodMonitors add); the variables' labels too."""
    import ray

    from bench.engines import make_engine

    exposed: dict[str, set[str]] = {}
    labels: dict[str, set[str]] = {}
    m = operator_metrics()
    port = free_port()
    server, _ = m.serve(port)
    try:
        text = scrape(f"http://127.0.0.1:{port}/metrics")
        exposed["operator"] = sample_names(text)
        labels.update(sample_labels(text))
    finally:
        server.shutdown()
        server.server_close()
    eng = make_engine("ray", 1)
    eng.start()
    try:
        assert eng.map(_double, list(range(50)))[-1] == 98
        names: set[str] = set()
        deadline = time.monotonic() + 60
        while not {"ray_node_cpu_utilization", "ray_node_mem_used"} <= names:
            assert time.monotonic() < deadline, "Ray never exported its node metrics"
            for n in ray.nodes():
                url = f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
                with contextlib.suppress(OSError):
                    text = scrape(url)
                    names |= sample_names(text)
                    for k, v in sample_labels(text).items():
                        labels.setdefault(k, set()).update(v)
            time.sleep(0.5)
        exposed["ray"] = names
    finally:
        eng.stop()
    eng = make_engine("dask", 1)
    eng.start()
    try:
        assert eng.map(_double, list(range(50)))[-1] == 98
        info = eng.client.scheduler_info(n_workers=-1)
        host = eng._scheduler_address.split("//")[1].rsplit(":", 1)[0]
        urls = [f"http://{host}:{info['services']['dashboard']}/metrics"] + [
            f"http://{w['host']}:{w['services']['dashboard']}/metrics"
            for w in info["workers"].values()]
        names = set()
        for url in urls:
            text = scrape(url)
            names |= sample_names(text)
            for k, v in sample_labels(text).items():
                labels.setdefault(k, set()).update(v)
        exposed["dask"] = names
    finally:
        eng.stop()
    everything = set().union(*exposed.values())
    used = set().union(*(metric_names(e) for e in expressions(build_dashboard())))
    assert used - everything == set(), {k: sorted(v)[:5] for k, v in exposed.items()}
    # Each source is actually used by the dashboard.
    for source, names in exposed.items():
        assert used & names, source
    # The labels the panels match and group on, and the variables read, exist on the series.
    d = build_dashboard()
    added = SCRAPE_LABELS | pod_monitor_target_labels()
    for expr in expressions(d):
        for name, wanted in used_labels(expr).items():
            have = labels[name] | (added if name in LIVE_METRICS else SCRAPE_LABELS)
            assert wanted <= have, (expr, wanted - have)
    for name, wanted in variable_labels(d).items():
        assert wanted <= labels[name], (name, wanted - labels[name])


PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package "
                    "'prometheus'; .ci/run installs it)")
def test_the_example_scrape_config_passes_promtool():
    p = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE_CONFIG)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout + p.stderr


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package "
                    "'prometheus'; .ci/run installs it)")
def test_a_real_prometheus_scrapes_the_operator_and_returns_trial_results(tmp_path):
    m = operator_metrics()
    status = operator_status()
    port, prom_port = free_port(), free_port()
    server, _ = m.serve(port)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: testbed-operator\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    check = subprocess.run([PROMTOOL, "check", "config", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # Prometheus writes to its own copy of the log's descriptor; ours closes once it started.
    with open(tmp_path / "prometheus.log", "w") as log:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                                stdout=log, stderr=subprocess.STDOUT)

    def query(q: str) -> list[dict]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            doc = json.loads(scrape(url))
        except OSError:
            return []
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    try:
        deadline = time.monotonic() + 90
        q = 'testbed_trial_duration_seconds{benchmark="cmp", workload="knn"}'
        while not (result := query(q)):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus never returned the trial results"
            time.sleep(0.5)
        got = {(r["metric"]["framework"], r["metric"]["workers"]): float(r["value"][1])
               for r in result}
        want = {(row["framework"], str(row["workers"])): row["median"] for row in status["summary"]
                if row["workload"] == "knn"}
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k])
        # A dashboard expression evaluates on the real server too.
        speedup = query('max by (framework) (testbed_trial_speedup{workload="knn", workers="2"})')
        assert {r["metric"]["framework"]: round(float(r["value"][1]), 3) for r in speedup} == {
            "ray": 2.0, "dask": 2.0}
        # The faulted runs' penalties (the knn trials at 2 workers: half the 1-worker base).
        penalty = query("testbed_fault_penalty_seconds")
        assert {(r["metric"]["framework"], r["metric"]["workers"]): round(float(r["value"][1]), 3)
                for r in penalty} == {("ray", "2"): 0.5, ("dask", "2"): 0.6}
    finally:
        proc.terminate()
        proc.wait(30)
        server.shutdown()
        server.server_close()
