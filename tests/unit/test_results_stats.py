"""Statistics over result records: pure functions, known inputs, expected outputs."""
from __future__ import annotations

import json

import pytest

from bench.results import (
    append_record,
    describe,
    is_beyond_noise,
    latest_records,
    read_records,
    summarize,
)

from support import make_record


def by_key(rows):
    return {(r["workload"], r["framework"], r["workers"]): r for r in rows}


# ---- describe ----------------------------------------------------------------------------

def test_describe_known_values():
    d = describe([1, 2, 3, 4, 5])
    assert d["median"] == 3.0
    assert d["iqr"] == 2.0  # q75 = 4, q25 = 2 (linear interpolation)
    assert (d["min"], d["max"], d["mean"], d["n"]) == (1.0, 5.0, 3.0, 5)


def test_describe_interpolates_percentiles():
    d = describe([1.0, 2.0, 3.0, 4.0])
    assert d["median"] == 2.5
    assert d["iqr"] == pytest.approx(3.25 - 1.75)


def test_describe_single_value_has_zero_iqr():
    d = describe([0.7])
    assert d == {**d, "median": 0.7, "iqr": 0.0, "min": 0.7, "max": 0.7, "n": 1}


@pytest.mark.parametrize("empty", [[], None])
def test_describe_empty(empty):
    d = describe(empty)
    assert d["n"] == 0
    assert all(d[k] is None for k in ("median", "iqr", "min", "max", "mean"))


# ---- summarize ---------------------------------------------------------------------------

def test_speedup_and_efficiency():
    rows = by_key(summarize([
        make_record(workers=1, seconds=[2.0, 2.0, 2.0]),
        make_record(workers=2, seconds=[1.0, 1.0, 1.0]),
        make_record(workers=4, seconds=[1.0, 1.0, 1.0]),
    ]))
    assert rows[("knn", "ray", 1)]["speedup"] == 1.0
    assert rows[("knn", "ray", 1)]["efficiency"] == 1.0
    assert rows[("knn", "ray", 2)]["speedup"] == 2.0
    assert rows[("knn", "ray", 2)]["efficiency"] == 1.0
    assert rows[("knn", "ray", 4)]["speedup"] == 2.0
    assert rows[("knn", "ray", 4)]["efficiency"] == 0.5


def test_speedup_base_is_smallest_worker_count():
    rows = by_key(summarize([
        make_record(workers=2, seconds=[4.0]),
        make_record(workers=8, seconds=[1.0]),
    ]))
    assert rows[("knn", "ray", 8)]["speedup"] == 4.0
    assert rows[("knn", "ray", 8)]["efficiency"] == 1.0  # 4x speedup for 4x workers


def test_vs_local_baselines():
    rows = by_key(summarize([
        make_record(framework="local", workers=1, seconds=[4.0]),
        make_record(framework="local", workers=4, seconds=[2.0]),
        make_record(framework="dask", workers=2, seconds=[1.0]),
    ]))
    dask = rows[("knn", "dask", 2)]
    assert dask["vs_local_1"] == 4.0
    assert dask["vs_local_all"] == 2.0
    local4 = rows[("knn", "local", 4)]
    assert local4["speedup"] == 2.0 and local4["efficiency"] == 0.5


def test_missing_baselines_are_none():
    row = summarize([make_record(framework="dask", workers=2, seconds=[1.0])])[0]
    assert row["vs_local_1"] is None and row["vs_local_all"] is None
    assert row["speedup"] == 1.0  # its own smallest worker count


def test_failed_trial_keeps_state_and_error_with_no_figures():
    rows = by_key(summarize([
        make_record(workers=1, seconds=[2.0]),
        make_record(workers=2, state="failed", error="worker died"),
    ]))
    failed = rows[("knn", "ray", 2)]
    assert failed["state"] == "failed" and failed["error"] == "worker died"
    for k in ("median", "iqr", "min", "speedup", "efficiency", "vs_local_1", "quality",
              "startup", "cpu_mean", "rss_peak"):
        assert failed[k] is None, k


def test_failed_base_makes_speedup_unknown():
    rows = by_key(summarize([
        make_record(workers=1, state="failed", error="boom"),
        make_record(workers=2, seconds=[1.0]),
    ]))
    assert rows[("knn", "ray", 2)]["speedup"] is None
    assert rows[("knn", "ray", 2)]["efficiency"] is None


def test_last_record_wins():
    rows = summarize([
        make_record(seconds=[5.0], run_id="old"),
        make_record(seconds=[1.0], run_id="new"),
    ])
    assert len(rows) == 1
    assert rows[0]["median"] == 1.0


def test_row_fields():
    row = summarize([make_record(seconds=[1.0, 2.0, 3.0, 4.0, 5.0], quality=0.9)])[0]
    assert (row["median"], row["iqr"], row["min"], row["n"]) == (3.0, 2.0, 1.0, 5)
    assert row["quality_metric"] == "accuracy" and row["quality"] == 0.9
    assert (row["startup"], row["load"], row["distribute"]) == (2.0, 0.5, 0.25)
    assert row["cpu_mean"] == 90.0 and row["rss_peak"] == 200 * 2**20
    assert row["state"] == "succeeded" and row["error"] is None


def test_quality_delta_against_local():
    rows = by_key(summarize([
        make_record(framework="local", workers=1, quality=0.96),
        make_record(framework="local", workers=4, quality=0.97),
        make_record(framework="ray", workers=2, quality=0.95),
    ]))
    ray = rows[("knn", "ray", 2)]
    assert ray["quality_local"] == 0.97
    assert ray["quality_delta"] == pytest.approx(-0.02)


def test_rows_are_ordered():
    rows = summarize([
        make_record(workload="knn", framework="dask", workers=2),
        make_record(workload="knn", framework="ray", workers=2),
        make_record(workload="knn", framework="ray", workers=1),
        make_record(workload="kmeans", framework="local", workers=1),
        make_record(workload="knn", framework="local", workers=1),
    ])
    assert [(r["workload"], r["framework"], r["workers"]) for r in rows] == [
        ("knn", "local", 1), ("knn", "ray", 1), ("knn", "ray", 2), ("knn", "dask", 2),
        ("kmeans", "local", 1),
    ]


def test_latest_records_keys():
    latest = latest_records([make_record(workers=1), make_record(workers=1, run_id="b")])
    assert list(latest) == [("knn", "ray", 1)]
    assert latest[("knn", "ray", 1)]["run_id"] == "b"


# ---- is_beyond_noise ---------------------------------------------------------------------

def test_doubling_is_beyond_noise():
    assert is_beyond_noise([1.0, 1.02, 0.98, 1.01], [2.0, 2.03, 1.97, 2.01])


def test_one_percent_is_within_noise():
    assert not is_beyond_noise([1.0, 1.0, 1.0], [1.01, 1.01, 1.01])


def test_change_inside_iqr_is_noise():
    # Medians differ by 20 %, but the spread of A is wider than that.
    assert not is_beyond_noise([0.5, 1.0, 1.5, 2.0], [1.45, 1.5, 1.55])


def test_single_runs_use_only_the_relative_rule():
    assert is_beyond_noise([1.0], [1.1])
    assert not is_beyond_noise([1.0], [1.04])


def test_empty_side_is_not_beyond_noise():
    assert not is_beyond_noise([], [1.0])
    assert not is_beyond_noise([1.0], [])


# ---- JSON Lines robustness ---------------------------------------------------------------

def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    good = make_record()
    path.write_text(json.dumps(good) + "\n" + json.dumps(make_record(workers=2))[:40])
    records = read_records(path)
    assert len(records) == 1 and records[0]["workers"] == 1


def test_append_after_torn_line_starts_new_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(make_record()) + "\n" + '{"workload": "knn", "fram')
    append_record(path, make_record(workers=2))
    records = read_records(path)
    assert [r["workers"] for r in records] == [1, 2]
    assert path.read_text().endswith("\n")


def test_append_creates_file_and_directories(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    append_record(path, make_record())
    append_record(path, make_record(workers=2))
    assert [r["workers"] for r in read_records(path)] == [1, 2]


WRITER = r"""
import sys
from bench.results import append_record
path, start = sys.argv[1], int(sys.argv[2])
for i in range(start, start + 10_000):
    append_record(path, {"workload": "knn", "framework": "ray", "i": i, "pad": "x" * 2_000_000})
    print(i, flush=True)
"""


def test_a_writer_killed_at_any_moment_never_corrupts_earlier_records(tmp_path):
    """SIGKILL a real process appending 2 MB records, five times over the same file: whatever
    moment each kill lands on (mid-write or between writes), every record reported written is
    read back whole and in order, and the next writer carries on after it."""
    import os
    import signal
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = tmp_path / "results.jsonl"
    confirmed: list[int] = []
    start = 0
    for kill_after in (1, 3, 2, 4, 1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)],
                                stdout=subprocess.PIPE, text=True, cwd=root)
        for _ in range(kill_after):  # the writer confirms each record after its fsync
            confirmed.append(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        records = read_records(path)
        got = [r["i"] for r in records]
        # Everything confirmed is there, in order; at most one more (written, not yet
        # confirmed) follows; nothing is corrupt.
        assert got[: len(confirmed)] == confirmed
        assert len(got) - len(confirmed) in (0, 1)
        assert all(len(r["pad"]) == 2_000_000 for r in records)
        confirmed = got
        start = got[-1] + 1
    assert len(confirmed) >= 11


# ---- the record: one factory, a schema version, one projection to the status --------------

def test_records_are_written_with_the_schema_version(tmp_path):
    from bench.record import SCHEMA_VERSION

    path = tmp_path / "results.jsonl"
    append_record(path, make_record())
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert read_records(path)[0]["schema_version"] == SCHEMA_VERSION


def test_a_record_without_schema_version_stays_readable(tmp_path):
    """What the code before the version wrote (version 1): read, upgraded, summarised."""
    from bench.record import SCHEMA_VERSION

    old = make_record(seconds=[2.0, 2.0])
    del old["schema_version"]
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n")
    records = read_records(path)
    assert len(records) == 1 and records[0]["schema_version"] == SCHEMA_VERSION
    assert {k: v for k, v in records[0].items() if k != "schema_version"} == old
    assert summarize(records)[0]["median"] == 2.0


def test_a_line_without_workload_or_framework_is_not_a_record(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"workload": "knn"}\n[1, 2]\n' + json.dumps(make_record()) + "\n")
    assert len(read_records(path)) == 1


def test_the_status_projection_keeps_what_the_summary_needs():
    from bench.record import from_status_result, to_status_result

    records = [make_record(framework="local", workers=1, seconds=[4.0, 4.2]),
               make_record(framework="ray", workers=1, seconds=[3.0, 3.1]),
               make_record(framework="ray", workers=2, seconds=[1.5, 1.6]),
               make_record(framework="dask", workers=2, state="failed", error="boom"),
               # Run in the operator's worker pods: the largest pod's working set too.
               make_record(framework="dask", workers=1, resources={
                   "cpu_mean": 80.0, "rss_peak": 270 * 2**20,
                   "container_working_set_peak_max_worker": 245 * 2**20})]
    rebuilt = [from_status_result(r["framework"], r["workers"], to_status_result(r))
               for r in records]
    assert summarize(rebuilt) == summarize(records)
    res = to_status_result(records[1])
    assert res["qualityMetric"] == "accuracy" and res["quality"] == 0.95
    assert res["cpu"] == 90.0 and res["memory"] == 200 * 2**20 and res["podMemory"] is None
    assert to_status_result(records[-1])["podMemory"] == 245 * 2**20
    (row,) = [r for r in summarize(rebuilt) if (r["framework"], r["workers"]) == ("dask", 1)]
    assert row["container_peak"] == 245 * 2**20
    assert set(res["phases"]) == {"startup", "load", "distribute"}  # no per-repeat lists
    assert "fault" not in res and "perTaskMicros" not in res


def test_the_runner_keeps_its_restart_flag_out_of_the_record(tmp_path):
    """A failed trial restarts its cluster; that is the runner's business, not a result."""
    from bench.runner import run_benchmark
    from bench.spec import parse_spec

    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 1, "warmup": 0, "workload": {"name": "noop"}})
    out = tmp_path / "r.jsonl"
    rec = run_benchmark(spec, str(out)).records[0]
    assert rec["state"] == "succeeded"
    assert not [k for k in rec if k.startswith("_")]
    assert not [k for k in json.loads(out.read_text()) if k.startswith("_")]


def test_an_error_whose_first_line_ends_in_a_colon_keeps_the_line_that_says_why():
    """Ray Train's WorkerGroupError reads "Training failed due to worker errors:" and gives the
    worker's error on the next line; the record's one-line error keeps that line too."""
    from bench.errors import error_summary

    class WorkerGroupError(Exception):
        pass

    e = WorkerGroupError("Training failed due to worker errors:\n\n  [Rank 0] FileNotFoundError: "
                         "data/part-00000.parquet\nTraceback ...")
    assert error_summary(e) == ("WorkerGroupError: Training failed due to worker errors: "
                                "[Rank 0] FileNotFoundError: data/part-00000.parquet")
    assert error_summary(ValueError("one line")) == "ValueError: one line"
    with pytest.raises(RuntimeError) as info:
        raise RuntimeError("outer") from OSError("why:\nbecause")
    assert error_summary(info.value) == "RuntimeError: outer (OSError: why:)"
