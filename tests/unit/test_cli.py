"""The testbed command end to end, as a user runs it: real processes, real clusters, real
files."""
import json
import os
import re
import subprocess
import sys

import pytest

from bench.frameworks import is_baseline
from bench.results import read_records

TESTBED = [sys.executable, "-m", "bench.cli"]


def run_testbed(*args, timeout=600, env=None, cwd=None):
    """``testbed ARGS`` in a new process (named so that pytest does not collect it as a test)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([*TESTBED, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=cwd)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One real run on Ray and Dask (2 workers) with the local baselines."""
    d = tmp_path_factory.mktemp("run")
    out, report = d / "results.jsonl", d / "report.html"
    p = run_testbed("run", "-f", "ray,dask", "-w", "2", "-l", "knn,tasks", "--repeats", "2",
                    "--out", out, "--report", report)
    return p, out, report


@pytest.mark.slow
def test_run_end_to_end(full_run):
    p, out, report = full_run
    assert p.returncode == 0, p.stderr + p.stdout
    recs = read_records(out)
    keys = {(r["workload"], r["framework"], r["workers"]) for r in recs}
    assert keys == {(w, f, n) for w in ("knn", "tasks")
                    for f, n in (("local", 1), ("local", os.cpu_count()), ("ray", 2), ("dask", 2))}
    for r in recs:
        assert r["state"] == "succeeded", r["error"]
        assert len(r["seconds"]) == 2 and r["median"] > 0
        assert r["phases"]["distribute"] is not None and r["phases"]["load"] > 0
        assert r["environment"]["versions"]["ray"] == "2.60.0"
        if not is_baseline(r["framework"]):
            assert r["phases"]["startup"] > 0 and r["tasks"] > 0
            assert len(r["resources"]["workers"]) == 2
    knn = {r["framework"]: r["quality"]["accuracy"] for r in recs if r["workload"] == "knn"}
    assert len(set(knn.values())) == 1  # every framework predicts exactly like scikit-learn
    tasks = [r for r in recs if r["workload"] == "tasks" and not is_baseline(r["framework"])]
    assert all(r["extra"]["per_task_us_async"] > 0 for r in tasks)
    # The summary table: rows are workloads, columns framework × workers.
    assert "Run Time Performance" in p.stdout
    assert "ray ×2" in p.stdout and "dask ×2" in p.stdout and "local 1t" in p.stdout
    html = report.read_text()
    assert "data:image/png;base64," in html and "knn" in html


@pytest.mark.slow
def test_report_and_compare_commands(full_run, tmp_path):
    _, out, _ = full_run
    p = run_testbed("report", out, "--out", tmp_path / "r.md")
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "r.md").read_text()
    assert "knn" in md and "![" in md
    p = run_testbed("compare", out, out)
    assert p.returncode == 0, p.stderr
    assert "within noise" in p.stdout


def _no_traceback(p):
    assert "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["run", "-f", "spark"], "spec.frameworks: unknown framework 'spark'"),
    (["run", "-w", "0"], "worker counts must be positive"),
    (["run", "-w", "two"], "expected positive integers"),
    (["run", "--repeats", "0"], "must be at least 1"),
    (["run", "-l", "sorting"], "unknown workload 'sorting'"),
    (["run", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "missing-spec.yaml"], "spec file 'missing-spec.yaml' does not exist"),
    (["run", "--dataset", "file", "--path", "/nonexistent/x.csv"],
     "dataset.path: file '/nonexistent/x.csv' does not exist"),
    (["run", "--dataset", "s3", "--uri", "s3:/bad"], "s3://bucket/key"),
    (["report", "/nonexistent/results.jsonl"], "/nonexistent/results.jsonl"),
    (["runner", "--framework", "ray", "--workers", "1"], "--address"),
    (["runner", "--framework", "ray", "--workers", "1", "--address", "h:1", "--spec-json", "{"],
     "--spec-json is not valid JSON"),
    (["runner", "--framework", "ray", "--workers", "1", "--address", "h:1",
      "--spec-json", '{"workers": [1], "workers": [2]}'],
     "--spec-json: duplicate key 'workers'; each field may be given once"),
    (["runner", "--framework", "rey", "--workers", "1", "--address", "h:1"],
     ("--framework: unknown framework 'rey'; expected ray, dask, dask-on-ray, dask-threads, "
      "dask-processes, dask-synchronous or local; "
      "did you mean 'ray'?")),
    # Dataset flags the dataset does not read (the whole default run used to start instead).
    (["run", "--uri", "s3://bucket/key"],
     ("testbed: error: --uri: only the s3 dataset reads it, and the dataset is 'digits'; "
      "add --dataset s3")),
    (["run", "--endpoint-url", "http://minio:9000"],
     ("testbed: error: --endpoint-url: only the s3 dataset reads it, "
      "and the dataset is 'digits'")),
    (["run", "--dataset", "synthetic", "--path", "x.csv"],
     ("testbed: error: --path: only the file dataset reads it, and the dataset is 'synthetic'; "
      "add --dataset file")),
    (["run", "--samples", "500"],
     ("testbed: error: --samples: only the synthetic dataset reads it, "
      "and the dataset is 'digits'; add --dataset synthetic")),
    (["run", "--dataset", "s3", "--uri", "s3://b/k", "--features", "8"],
     ("testbed: error: --features: only the synthetic dataset reads it, "
      "and the dataset is 's3'")),
    # Did you mean ...?
    (["run", "-f", "rey"], ("testbed: error: spec.frameworks: unknown framework 'rey'; "
                            "expected one of local, ray, dask, dask-on-ray, dask-threads, "
                            "dask-processes, dask-synchronous; did you mean 'ray'?")),
    (["run", "-l", "kmean"], "did you mean 'kmeans'?"),
    (["run", "--dataset", "synthtic"], "did you mean 'synthetic'?"),
    (["rnu"], ("invalid choice: 'rnu' (choose from 'run', 'report', 'compare', 'runner', 'data'); "
               "did you mean 'run'?")),
    (["compare", "a.jsonl", "b.jsonl", "--threshold", "-0.1"],
     "argument --threshold: expected a fraction of 0 or more like 0.05 (5%), got -0.1"),
])
def test_usage_errors_exit_2_with_a_clear_message(args, words, tmp_path):
    p = run_testbed(*args, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert words in p.stderr, p.stderr
    _no_traceback(p)


def test_semantic_spec_errors_name_the_param(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("workload: {name: pca, params: {n_components: 100}}\nbaselines: false\n")
    p = run_testbed("run", spec, "--out", tmp_path / "r.jsonl")
    assert p.returncode == 2
    assert "workloads.0.params.n_components: 100 is more than the dataset's 64 features" in p.stderr
    _no_traceback(p)
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: [1, 2\n")
    p = run_testbed("run", bad)
    assert p.returncode == 2 and "not valid YAML at line" in p.stderr


def test_debug_shows_the_traceback(tmp_path):
    p = run_testbed("--debug", "run", "-f", "spark")
    assert p.returncode != 0 and "Traceback" in p.stderr
    # After the subcommand too (argparse used to call it an unrecognized argument).
    p = run_testbed("run", "-f", "spark", "--debug")
    assert p.returncode != 0 and "Traceback" in p.stderr and "unrecognized" not in p.stderr


def test_version():
    from importlib.metadata import version

    p = run_testbed("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == (f"testbed {version('raydask-testbed')} (ray {version('ray')}, "
                        f"dask {version('dask')})\n")


def test_a_local_run_that_cannot_fit_the_machine_fails_before_starting(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text("frameworks: [dask]\nworkers: [1, 4]\nworkerResources: {memory: 16Ti}\n")
    p = run_testbed("run", spec, "--out", tmp_path / "r.jsonl")
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("testbed: error: big.yaml.workerResources.memory: "
                               "4 workers × 16Ti = 64Ti is more than this machine's "), p.stderr
    assert p.stderr.rstrip().endswith("of memory; lower workerResources.memory or the worker count")
    _no_traceback(p)
    assert not (tmp_path / "r.jsonl").exists()


def _results(path, *seconds_by_workers):
    from bench.results import append_record

    from support import make_record

    for workers, seconds in seconds_by_workers:
        state = "failed" if seconds is None else "succeeded"
        append_record(path, make_record(
            framework="ray", workers=workers, workload="knn", seconds=seconds or [],
            state=state, error=None if seconds else "boom", phases={}, resources={},
            benchmark="t", dataset={"name": "digits"}, quality={}, tasks=1, environment={}))
    return path


def test_compare_exits_1_when_b_is_slower_beyond_noise(tmp_path):
    a = _results(tmp_path / "a.jsonl", (1, [1.0, 1.01, 0.99]), (2, [0.6, 0.6, 0.6]))
    b = _results(tmp_path / "b.jsonl", (1, [1.3, 1.31, 1.29]), (2, [0.61, 0.6, 0.6]))
    p = run_testbed("compare", a, b)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "slower" in p.stdout and "within noise" in p.stdout
    assert p.stderr == ("testbed: error: 1 of 2 trials regressed in B (knn/rayx1 +30.0%): slower "
                        "beyond noise (both IQRs and 5%) or failed only in B; --no-fail to only "
                        "compare\n")
    p = run_testbed("compare", a, b, "--no-fail")
    assert p.returncode == 0 and "slower" in p.stdout, p.stderr
    p = run_testbed("compare", a, b, "--threshold", "0.4")
    assert p.returncode == 0 and "slower" not in p.stdout, p.stdout + p.stderr
    # B faster than A: success; the help says what the exit status means.
    assert run_testbed("compare", b, a).returncode == 0
    assert "Exit status 1 when any" in run_testbed("compare", "--help").stdout


def test_report_format_without_out_prints_markdown(tmp_path):
    results = _results(tmp_path / "r.jsonl", (1, [1.0, 1.0, 1.0]), (2, [0.5, 0.5, 0.5]))
    p = run_testbed("report", results, "--format", "md", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("# Ray vs Dask benchmark") and "## Run time performance" in p.stdout
    assert "ray ×2" in p.stdout and "┃" not in p.stdout  # Markdown, not the terminal tables
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.jsonl"]


def test_compare_and_printed_reports_never_load_matplotlib(tmp_path):
    """matplotlib (a second of start-up) is for the figures only: `testbed compare` and the
    reports without figures (the tables; Markdown on stdout) run without it, while a report file
    with figures does load it (so the check below can fail)."""
    a = _results(tmp_path / "a.jsonl", (1, [1.0, 1.01, 0.99]), (2, [0.6, 0.6, 0.6]))
    b = _results(tmp_path / "b.jsonl", (1, [1.3, 1.31, 1.29]), (2, None))
    code = f"""
import contextlib, io, sys
from bench.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["compare", {str(a)!r}, {str(b)!r}]),
             main(["compare", {str(a)!r}, {str(b)!r}, "--no-fail"]),
             main(["report", {str(a)!r}]), main(["report", {str(b)!r}, "--format", "md"])]
print("codes", codes)
print("loaded", sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
with contextlib.redirect_stdout(io.StringIO()):
    main(["report", {str(a)!r}, "--out", {str(tmp_path / "r.md")!r}])
print("after a report file", "matplotlib" in sys.modules)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["codes [1, 0, 0, 0]", "loaded []",
                                     "after a report file True"], p.stdout + p.stderr


def test_unreachable_cluster_is_a_run_failure(tmp_path):
    spec = json.dumps({"workload": {"name": "noop"}, "timeoutSeconds": 3})
    p = run_testbed("runner", "--framework", "dask", "--workers", "1",
                    "--address", "tcp://127.0.0.1:1", "--spec-json", spec,
                    "--out", tmp_path / "r.jsonl")
    assert p.returncode == 1
    assert "cannot connect to the Dask scheduler at 'tcp://127.0.0.1:1'" in p.stderr
    _no_traceback(p)
    rec = read_records(tmp_path / "r.jsonl")[0]
    assert rec["state"] == "failed" and "cannot connect" in rec["error"]


@pytest.mark.slow
def test_timeout_fails_the_trial_and_keeps_earlier_results(tmp_path):
    import yaml

    # 300 SVC fits on one worker take far longer than the 12 s allowed.
    grid = {"C": [float(c) for c in range(1, 301)], "gamma": [0.001]}
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "frameworks": ["dask"], "workers": [1], "baselines": False, "timeoutSeconds": 12,
        "repeats": 1, "workloads": [{"name": "noop"}, {"name": "gridsearch", "params": grid},
                                    {"name": "noop"}]}))
    out = tmp_path / "r.jsonl"
    p = run_testbed("run", spec, "--out", out)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 of 3 trials failed" in p.stderr
    _no_traceback(p)
    recs = read_records(out)
    assert [r["state"] for r in recs] == ["succeeded", "failed", "succeeded"]
    # the message counts the cluster's start-up, which the timeout includes
    m = re.search(r"timed out after (\d+)s \(timeoutSeconds=12: cluster start-up (\d+)s, "
                  r"the trial (\d+)s; 0 of 1 repeats done\)", recs[1]["error"])
    assert m, recs[1]["error"]
    total, startup, trial = map(int, m.groups())
    assert total >= 11 and abs(startup + trial - total) <= 1, recs[1]["error"]


@pytest.mark.slow
def test_runner_connects_to_an_existing_dask_cluster(tmp_path):
    from bench.engines import make_engine

    cluster = make_engine("dask", 2)
    cluster.start()
    try:
        spec = json.dumps({"workload": {"name": "knn"}, "repeats": 2, "warmup": 1})
        p = run_testbed("runner", "--framework", "dask", "--workers", "2",
                        "--address", cluster._scheduler_address, "--spec-json", spec)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        (rec,) = doc["records"]
        assert rec["state"] == "succeeded" and rec["workers"] == 2
        assert rec["environment"]["engine"]["started_cluster"] is False
        assert len(rec["resources"]["workers"]) == 2
        # The runner left the cluster it connected to running.
        assert len(cluster.client.scheduler_info(n_workers=-1)["workers"]) == 2
    finally:
        cluster.stop()


@pytest.mark.slow
def test_runner_connects_to_an_existing_ray_cluster(tmp_path):
    from bench.engines import make_engine

    cluster = make_engine("ray", 1)
    cluster.start()
    try:
        gcs = cluster._gcs_address
        spec = json.dumps({"workload": {"name": "pca"}, "repeats": 2})
        out = tmp_path / "r.jsonl"
        p = run_testbed("runner", "--framework", "ray", "--workers", "1", "--address", gcs,
                        "--spec-json", spec, "--out", out,
                        env={"TESTBED_NODE_IP": cluster._head_ip})
        assert p.returncode == 0, p.stderr
        (rec,) = read_records(out)
        assert rec["state"] == "succeeded"
        assert rec["environment"]["engine"]["started_cluster"] is False
        assert rec["quality"]["explained_variance"] > 0.5
    finally:
        cluster.stop()


def test_dataset_flags_follow_the_dataset_in_use(tmp_path):
    """In process: --samples is fine for a spec's synthetic dataset; --dataset replacing the
    spec's dataset drops the fields only the old one reads (they would now be errors)."""
    from bench.cli import build_parser
    from bench.cli.spec_args import spec_from_args as _spec_from_args

    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: {name: synthetic, samples: 500, features: 8, seed: 3}\n")
    s = _spec_from_args(build_parser().parse_args(["run", str(spec), "--samples", "1000"]))
    assert (s.dataset.name, s.dataset.samples, s.dataset.features) == ("synthetic", 1000, 8)
    s = _spec_from_args(build_parser().parse_args(["run", str(spec), "--dataset", "digits"]))
    assert s.dataset.name == "digits" and s.dataset.seed == 3
    assert s.dataset.model_fields_set.isdisjoint({"samples", "features"})
    s = _spec_from_args(build_parser().parse_args(
        ["run", str(spec), "--dataset", "s3", "--uri", "s3://b/k", "--endpoint-url", "http://m:9000"]))
    assert (s.dataset.uri, s.dataset.endpoint_url, s.dataset.samples) == (
        "s3://b/k", "http://m:9000", 10_000)
