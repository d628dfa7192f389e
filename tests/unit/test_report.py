"""Tables, figures, reports and comparisons built from hand-made records."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from bench.errors import RunError, UsageError
from bench.report import (
    compare,
    compare_command,
    make_figures,
    render_compare,
    render_table,
    report_command,
    table_text,
    write_report,
)
from bench.results import append_record, summarize

try:  # tests/ on sys.path (pytest's default rootdir-relative import)
    from test_results_stats import make_record
except ImportError:  # tests imported as a package
    from tests.test_results_stats import make_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_records():
    """Two workloads, local baselines, ray and dask at 1 and 2 workers, one failure, a fault."""
    recs = []
    for workload, t1, metric, q in (("knn", 4.0, "accuracy", 0.97),
                                    ("kmeans", 1.2, "inertia", 1234.5)):
        recs.append(make_record(workload, "local", 1, [t1, t1 * 1.01, t1 * 0.99], metric=metric,
                                quality=q))
        recs.append(make_record(workload, "local", 4, [t1 / 3] * 3, metric=metric, quality=q))
        recs.append(make_record(workload, "ray", 1, [t1 * 1.1] * 3, metric=metric, quality=q))
        recs.append(make_record(workload, "ray", 2, [t1 * 0.55] * 3, metric=metric, quality=q))
        recs.append(make_record(workload, "dask", 1, [t1 * 1.2] * 3, metric=metric, quality=q))
    recs.append(make_record("knn", "dask", 2, state="failed", error="KilledWorker: boom"))
    recs.append(make_record("kmeans", "dask", 2, [0.7, 0.71, 0.69], metric="inertia",
                            quality=1250.0, faults=DASK_FAULT))
    recs.append(make_record("knn", "ray", 3, [1.0, 1.0, 1.0], metric="accuracy", quality=0.97,
                            faults=RAY_FAULT))
    return recs


# The shapes bench.faults records (taken from real runs, see tests/engine/test_faults.py).
DASK_FAULT = {
    "applicable": True, "kill_workers": 1, "kill_head": False, "after_fraction": 0.4,
    "settings": {"allowed_failures": 3, "nanny": True}, "delay_seconds": 0.28,
    "killed": [{"role": "worker", "name": "w0", "at": 0.29, "run_still_going": True}],
    "killed_before_end": True, "finished": True, "quality_matches": True, "seconds": 1.31,
    "penalty_seconds": 0.61,
    "observed": {"observed": True, "workers_removed": 1, "detected_after_seconds": 0.031,
                 "replaced_after_seconds": 0.58, "recomputed_tasks": 4, "lost_results": 3,
                 "rescheduled_tasks": 1, "killed_worker_errors": 0},
}
RAY_FAULT = {
    "applicable": True, "kill_workers": 1, "kill_head": False, "after_fraction": 0.4,
    "settings": {"max_retries": 0}, "delay_seconds": 0.4,
    "killed": [{"role": "worker", "name": "127.0.0.5", "at": 0.41, "run_still_going": True}],
    "killed_before_end": True, "finished": False, "seconds": 0.52, "penalty_seconds": -0.48,
    "error": "NodeDiedError: Task failed because the node it was running on is dead",
    "observed": {"observed": True, "workers_removed": 1, "detected_after_seconds": 0.04,
                 "node_dead_after_seconds": 14.2, "retried_tasks": 0, "failed_attempts": 1,
                 "failed_by_error": {"NODE_DIED": 1}},
}


def console():
    return Console(record=True, width=220, color_system=None)


# ---- tables ------------------------------------------------------------------------------

def test_table_text_has_cells_and_labels():
    text = table_text(summarize(sample_records()))
    for label in ("knn", "kmeans", "local 1t", "local 4t", "ray ×1", "ray ×2", "dask ×1",
                  "dask ×2", "FAILED"):
        assert label in text, label
    assert "4.000 ±0.040" in text  # knn local 1t: median 4.0, IQR 0.04
    assert "2.200 ±0.000" in text  # knn ray x2
    assert "2.00×" in text  # ray speedup 4.4 / 2.2
    assert "\x1b[" not in text


def _table_rows(text: str, width: int) -> list[list[str]]:
    """The rows of a printed table with ``width`` cells (cells are split on 2+ spaces)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
    return [r for r in rows if len(r) == width]


def test_render_table_prints_both_tables():
    rows = summarize(sample_records())
    c = console()
    render_table(rows, c)
    out = c.export_text()
    assert "Run Time Performance" in out and "Scaling" in out
    # Scaling and quality: one line per summary row, its median, speedup and quality.
    scaling = {tuple(r[:3]): r[3:] for r in _table_rows(out, 9)}
    assert set(scaling) - {("Workload", "Framework", "Workers")} == {
        (r["workload"], r["framework"], str(r["workers"])) for r in rows}
    for r in rows:
        cells = scaling[(r["workload"], r["framework"], str(r["workers"]))]
        if r["state"] != "succeeded":
            assert cells == ["FAILED", "—", "—", "—", "—", "—"], cells
            continue
        assert cells[0] == f"{r['median']:.3f} ±{r['iqr']:.3f}", cells
        assert cells[1] == f"{r['speedup']:.2f}×" and cells[2] == f"{r['efficiency']:.2f}", cells
        assert cells[5].startswith(r["quality_metric"]), cells
    # Run Time Performance: a column per framework and worker count, a row per workload.
    (header, knn, kmeans) = _table_rows(out, 8)
    assert header == ["Workload", "local 1t", "local 4t", "ray ×1", "ray ×2", "ray ×3",
                      "dask ×1", "dask ×2"]
    assert knn == ["knn", "4.000 ±0.040", "1.333 ±0.000", "4.400 ±0.000", "2.200 ±0.000",
                   "1.000 ±0.000", "4.800 ±0.000", "FAILED"]
    assert kmeans[0] == "kmeans" and kmeans[5] == "—" and kmeans[7] == "0.700 ±0.010"


# ---- figures -----------------------------------------------------------------------------

def test_make_figures_writes_every_kind(tmp_path):
    paths = make_figures(sample_records(), tmp_path)
    assert {p.name for p in paths} == {"time_vs_workers.png", "speedup_efficiency.png",
                                       "phases.png", "resources.png", "faults.png",
                                       "scaling_model.png"}  # (ray ran at 1, 2 and 3)
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_make_figures_skips_resources_without_samples(tmp_path):
    recs = [make_record(workers=w, seconds=[1.0 / w], resources={"workers": []}) for w in (1, 2)]
    names = {p.name for p in make_figures(recs, tmp_path)}
    assert "resources.png" not in names
    assert "time_vs_workers.png" in names


def test_the_memory_chart_shows_unique_memory_inside_the_rss_bar():
    """A worker's unique memory (each page once) is drawn inside its RSS bar and labelled,
    where the record has it; a record without it (older, or no CAP_SYS_ADMIN) shows RSS only."""
    from bench.report.figures import _resources

    def res(rss, unique):
        return {"workers": [], "cpu_mean": 90.0, "cpu_peak": 100.0, "rss_peak": rss,
                "unique_at_rss_peak_max_worker": unique}

    recs = [make_record(framework="ray", workers=2, resources=res(2070 * 2**20, 974 * 2**20)),
            make_record(framework="dask", workers=2, resources=res(329 * 2**20, None))]
    rows = summarize(recs)
    assert {r["framework"]: r["unique_peak"] for r in rows} == {"ray": 974 * 2**20, "dask": None}
    fig = _resources(rows)
    memory = fig.axes[1]
    assert sorted(t.get_text() for t in memory.texts) == ["2070 MiB (unique 974)", "329 MiB"]
    bars = sorted(round(b.get_width()) for b in memory.patches)
    assert bars == [329, 974, 2070], bars  # the two RSS bars and one unique bar


def test_the_memory_chart_marks_a_worker_pods_working_set():
    """On Kubernetes a record has its worker pods' working set (no unique memory there): the
    chart marks it on the RSS bar's row and labels it, and says what the mark is."""
    from bench.report.figures import _resources

    def res(rss, pod):
        return {"workers": [], "cpu_mean": 90.0, "cpu_peak": 100.0, "rss_peak": rss,
                "container_working_set_peak_max_worker": pod}

    recs = [make_record(framework="ray", workers=1, resources=res(1500 * 2**20, 700 * 2**20)),
            make_record(framework="dask", workers=1, resources=res(300 * 2**20, 410 * 2**20))]
    rows = summarize(recs)
    assert {r["framework"]: r["container_peak"] for r in rows} == {"ray": 700 * 2**20,
                                                                   "dask": 410 * 2**20}
    memory = _resources(rows).axes[1]
    assert sorted(t.get_text() for t in memory.texts) == ["1500 MiB (pod 700)",
                                                          "300 MiB (pod 410)"]
    (marks,) = memory.collections
    assert sorted(round(x) for x, _ in marks.get_offsets()) == [410, 700]
    assert "working set of its pod" in memory.get_xlabel()
    # A pod's working set above its RSS sum (the nanny, page cache) still fits the axes.
    assert memory.get_xlim()[1] > 410
    local = [make_record(framework="ray", workers=1, resources=res(1500 * 2**20, None))]
    memory = _resources(summarize(local)).axes[1]
    assert not memory.collections and "pod" not in memory.get_xlabel()


# ---- reports -----------------------------------------------------------------------------

def test_html_report(tmp_path):
    out = write_report(sample_records(), tmp_path / "report.html", "html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for needle in ("knn", "kmeans", "4.000 ±0.040", "FAILED", "Fault tolerance",
                   "How to read", "hostname"):
        assert needle in text, needle
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 6
    import base64
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert not list(tmp_path.glob("*_figures"))  # self-contained


def test_markdown_report(tmp_path):
    out = write_report(sample_records(), tmp_path / "report.md", "md")
    text = out.read_text()
    for needle in ("# Ray vs Dask", "knn", "kmeans", "4.000 ±0.040", "**FAILED**",
                   "## Fault tolerance", "| ray ×2 |"):
        assert needle in text, needle
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 6
    for link in links:
        assert link.startswith("report_figures/")
        png = tmp_path / link
        assert png.is_file() and png.read_bytes().startswith(PNG_MAGIC)


def test_no_fault_table_without_faults(tmp_path):
    recs = [r for r in sample_records() if not r["faults"]]
    text = write_report(recs, tmp_path / "r.md", "md").read_text()
    assert "Fault tolerance" not in text
    assert not (tmp_path / "r_figures" / "faults.png").exists()


def test_fault_table_says_what_happened(tmp_path):
    text = write_report(sample_records(), tmp_path / "r.md", "md").read_text()
    section = text.split("\n## Fault tolerance")[1].split("\n## ")[0]
    dask = next(line for line in section.splitlines() if "| kmeans | dask ×2 |" in line)
    for needle in ("w0 @0.29s", "finished; same quality", "| 0.03 |", "+0.610", "replaced 0.58",
                   "4 recomputed, 3 lost results", "nanny, allowed_failures=3"):
        assert needle in dask, (needle, dask)
    ray = next(line for line in section.splitlines() if "| knn | ray ×3 |" in line)
    for needle in ("127.0.0.5 @0.41s", "**FAILED: NodeDiedError", "node dead 14.2",
                   "0 retried (1 NODE_DIED)", "max_retries=0"):
        assert needle in ray, (needle, ray)


def test_quality_section_compares_with_local(tmp_path):
    text = write_report(sample_records(), tmp_path / "r.md", "md").read_text()
    section = text.split("\n## Quality vs the local baseline")[1].split("\n## ")[0]
    # 15.5 / 1234.5 = 1.26 % of the baseline: inside K-Means' own 2 % tolerance.
    assert "| kmeans | inertia | dask ×2 | 1250 | 1234 | +1.3% | ±2% | yes |" in section


def test_write_report_rejects_unknown_format(tmp_path):
    with pytest.raises(UsageError):
        write_report(sample_records(), tmp_path / "r.pdf", "pdf")


# ---- compare -----------------------------------------------------------------------------

def test_compare_flags_slowdown_and_noise():
    a = [make_record(workers=1, seconds=[1.0, 1.01, 0.99]),
         make_record(workers=2, seconds=[0.5, 0.51, 0.49]),
         make_record(framework="dask", workers=1, seconds=[1.0])]
    b = [make_record(workers=1, seconds=[2.0, 2.02, 1.98]),
         make_record(workers=2, seconds=[0.505, 0.515, 0.495]),
         make_record(framework="local", workers=1, seconds=[3.0])]
    rows = {(r["framework"], r["workers"]): r for r in compare(a, b)}
    slow = rows[("ray", 1)]
    assert slow["verdict"] == "slower" and slow["change"] == pytest.approx(1.0)
    assert rows[("ray", 2)]["verdict"] == "within noise"
    assert rows[("ray", 2)]["change"] == pytest.approx(0.01)
    assert rows[("dask", 1)]["verdict"] == "only in A" and rows[("dask", 1)]["median_b"] is None
    assert rows[("local", 1)]["verdict"] == "only in B" and rows[("local", 1)]["median_a"] is None


def test_compare_faster_and_failed():
    a = [make_record(workers=1, seconds=[2.0, 2.0, 2.0]), make_record(workers=2, seconds=[1.0])]
    b = [make_record(workers=1, seconds=[1.0, 1.0, 1.0]),
         make_record(workers=2, state="failed", error="x")]
    rows = {r["workers"]: r for r in compare(a, b)}
    assert rows[1]["verdict"] == "faster"
    assert rows[2]["verdict"] == "failed in B" and rows[2]["change"] is None


def test_render_compare_shows_dash_for_missing():
    a = [make_record(workers=1, seconds=[1.0])]
    b = [make_record(workers=1, seconds=[2.0]), make_record(workers=2, seconds=[1.0])]
    c = console()
    render_compare(compare(a, b), c)
    out = c.export_text()
    assert "slower" in out and "only in B" in out and "—" in out and "+100.0%" in out


# ---- CLI glue ----------------------------------------------------------------------------

def write_jsonl(path: Path, records):
    for r in records:
        append_record(path, r)
    return path


def test_report_command_writes_inferred_format(tmp_path):
    results = write_jsonl(tmp_path / "results.jsonl", sample_records())
    c = console()
    assert report_command(str(results), str(tmp_path / "out.md"), None, c) == 0
    assert (tmp_path / "out.md").is_file() and (tmp_path / "out_figures").is_dir()
    assert "Run Time Performance" in c.export_text()
    assert report_command(str(results), str(tmp_path / "out.html"), None, console()) == 0
    assert "data:image/png;base64," in (tmp_path / "out.html").read_text()


def test_report_command_prints_only_without_out(tmp_path):
    results = write_jsonl(tmp_path / "results.jsonl", sample_records())
    c = console()
    assert report_command(str(results), None, None, c) == 0
    out = c.export_text()
    # The summary tables of these records (the same as render_table prints), nothing written.
    expected = console()
    render_table(summarize(sample_records()), expected)
    want = expected.export_text()
    # (13 trials; their Flags cells are empty, so only the header has 10 cells)
    assert len(_table_rows(want, 9)) == 13 and _table_rows(want, 9) == _table_rows(out, 9)
    # (the run-time table's rows come first; the cost table's rows also have 8 cells)
    assert len(_table_rows(want, 8)) == 3 and _table_rows(want, 8) == _table_rows(out, 8)[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]


def test_report_command_unknown_suffix(tmp_path):
    results = write_jsonl(tmp_path / "results.jsonl", sample_records())
    with pytest.raises(UsageError, match="format"):
        report_command(str(results), str(tmp_path / "out.txt"), None, console())
    assert report_command(str(results), str(tmp_path / "out.txt"), "md", console()) == 0


def test_missing_and_empty_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        report_command(str(tmp_path / "nope.jsonl"), None, None, console())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UsageError, match="has no result records"):
        report_command(str(empty), None, None, console())
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n" + json.dumps({"x": 1}) + "\n")
    with pytest.raises(UsageError, match="has no result records"):
        compare_command(str(junk), str(empty), console())


def test_compare_command(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [make_record(seconds=[1.0, 1.0, 1.0])])
    b = write_jsonl(tmp_path / "b.jsonl", [make_record(seconds=[2.0, 2.0, 2.0])])
    c = console()
    assert compare_command(str(a), str(b), c, fail=False) == 0
    assert "slower" in c.export_text()


def test_compare_command_fails_on_a_regression_only(tmp_path):
    """B slower beyond noise, or failed where A succeeded: a RunError (exit 1) naming the
    trials; faster, within noise and only-in-one-file are not regressions."""
    a = write_jsonl(tmp_path / "a.jsonl", [
        make_record(workers=1, seconds=[1.0, 1.01, 0.99]), make_record(workers=2, seconds=[1.0]),
        make_record(workers=4, seconds=[1.0, 1.0, 1.0]), make_record(workers=8, seconds=[1.0])])
    b = write_jsonl(tmp_path / "b.jsonl", [
        make_record(workers=1, seconds=[1.2, 1.21, 1.19]),
        make_record(workers=2, state="failed", error="x"),
        make_record(workers=4, seconds=[0.5, 0.5, 0.5]), make_record(workers=16, seconds=[1.0])])
    with pytest.raises(RunError) as e:
        compare_command(str(a), str(b), console())
    assert str(e.value).startswith("2 of 5 trials regressed in B (knn/rayx1 +20.0%, "
                                   "knn/rayx2 failed)"), str(e.value)
    assert "--no-fail" in str(e.value)
    # A higher threshold makes the 20 % slowdown noise; the failure still counts.
    with pytest.raises(RunError, match=r"^1 of 5 trials regressed in B \(knn/rayx2 failed\)"):
        compare_command(str(a), str(b), console(), threshold=0.25)
    assert compare_command(str(a), str(b), console(), fail=False) == 0
    # Faster (the rest only in A), or the same file twice: success.
    fast = write_jsonl(tmp_path / "fast.jsonl", [make_record(workers=1, seconds=[0.5, 0.5, 0.5])])
    assert compare_command(str(a), str(fast), console()) == 0
    assert compare_command(str(a), str(a), console()) == 0


def test_compare_threshold_is_the_5_percent_rule():
    a = [make_record(seconds=[1.0, 1.0, 1.0])]
    b = [make_record(seconds=[1.04, 1.04, 1.04])]
    assert compare(a, b)[0]["verdict"] == "within noise"
    assert compare(a, b, threshold=0.03)[0]["verdict"] == "slower"
    assert compare(a, b, threshold=0)[0]["verdict"] == "slower"


def test_report_format_without_out_prints_the_report(tmp_path, capsys):
    results = write_jsonl(tmp_path / "results.jsonl", sample_records())
    c = console()
    assert report_command(str(results), None, "md", c) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Ray vs Dask benchmark") and "## Run time performance" in md
    assert "knn" in md and "kmeans" in md
    assert "![" not in md and c.export_text() == ""  # no figures, no rich tables mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
    assert report_command(str(results), None, "html", console()) == 0
    html_text = capsys.readouterr().out
    assert html_text.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html_text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]
