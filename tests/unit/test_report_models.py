"""The report's figures and models from synthetic records with known answers: phases (load once,
warm-up present), per-worker timelines and their sample counts, published reference files,
Amdahl/USL fits, and the interactive (bokeh) HTML."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.report import make_figures, report_command, write_report
from bench.report.breakdown import (
    load_bars,
    phase_panels,
    timelines,
    worker_peak_section,
)
from bench.report.references import load_references, reference_section
from bench.report.scaling import (
    MODELS,
    Sweep,
    fit,
    fit_sweep,
    scaling_model_section,
    sweeps,
    usl,
)

from support import make_record

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "references" / "seeds-4vm.yaml"
AMDAHL, USL = MODELS


def timeline(n: int, cpu: float, rss: int, interval: float = 0.1) -> list[list[float]]:
    return [[i * interval, cpu + (i % 3), rss + i * 2**20] for i in range(n)]


def usl_records(alpha: float = 0.1, beta: float = 0.01, t1: float = 8.0,
                ns: tuple[int, ...] = (1, 2, 4, 8)) -> list[dict]:
    """Ray trials whose median times follow the USL exactly (repeats spread ±2 %)."""
    recs = []
    for n in ns:
        t = t1 / float(usl(n, alpha, beta))
        workers = [{"id": f"w{i}", "cpu_mean": 80.0, "cpu_peak": 99.0, "rss_peak": 2**28,
                    "samples": 20 + i, "timeline": timeline(20 + i, 80.0 + 5 * i, 2**27)}
                   for i in range(n)]
        recs.append(make_record("knn", "ray", n, [t * 0.98, t, t * 1.02],
                                resources={"workers": workers, "interval_s": 0.1,
                                           "cpu_mean": 80.0 * n, "rss_peak": 2**28}))
    return recs


# ---- phases ------------------------------------------------------------------------------

def test_phases_load_once_and_warmup_bar():
    recs = [make_record("knn", "ray", n, [2.0, 3.0, 4.0],
                        phases={"startup": 1.5, "load": 0.5, "distribute": 0.25,
                                "warmup": [0.75, 0.5], "compute": [2.0, 3.0, 4.0]})
            for n in (1, 2)]
    recs.append(make_record("kmeans", "dask", 2, [1.0]))
    loads = load_bars(recs)
    assert [(b.dataset, b.seconds) for b in loads] == [("digits", 0.5)]  # one bar, one run
    panels = phase_panels(recs)
    assert [p.workload for p in panels] == ["knn", "kmeans"]
    bar = panels[0].bars[0]
    assert "load" not in bar.seconds  # never repeated per trial
    assert bar.seconds == {"startup": 1.5, "distribute": 0.25, "warmup": 1.25, "compute": 3.0}
    assert bar.warmup_runs == 2


def test_phases_of_a_failed_trial_are_empty_and_flagged():
    panels = phase_panels([make_record("knn", "dask", 2, state="failed", error="x")])
    assert panels[0].bars[0].failed and panels[0].bars[0].seconds == {}


# ---- per-worker timelines ----------------------------------------------------------------

def test_timelines_pick_the_largest_trial_and_count_samples():
    recs = [*usl_records(ns=(1, 2, 4)), make_record("knn", "dask", 2)]  # dask: no timeline
    trials, missing = timelines(recs)
    assert [(t.framework, t.workers) for t in trials] == [("ray", 4)]
    assert missing == ["knn: dask ×2"]
    assert [line.samples for line in trials[0].lines] == [20, 21, 22, 23]
    assert trials[0].samples_text == "n = 20–23 samples per worker, interval up to 0.1 s"
    every, _ = timelines(recs, select="all")
    assert [t.workers for t in every] == [1, 2, 4]
    # A long run's timeline merges points: the sampler's count is what is said.
    recs[0]["resources"]["workers"][0]["samples"] = 500
    (one,), _ = timelines(recs[:1])
    assert one.samples_text == "n = 500 samples per worker (20 points drawn), interval up to 0.1 s"


def test_worker_peak_table_is_per_worker_not_summed():
    section = worker_peak_section(usl_records(ns=(2,)))
    assert section is not None
    headers, body = section.grid
    assert headers[3] == "CPU peak (% of one core)"
    rows = [[c[0] for c in line] for line in body]
    # worker w1: cpu 85 + (i % 3) -> peak 87; rss 128 MiB + 20 MiB at i = 20.
    assert rows[1][:6] == ["knn: ray ×2", "w1", "21", "87", "86", "148"]
    assert "not summed" in section.intro


def test_records_without_timelines_are_skipped_with_a_note():
    assert worker_peak_section([make_record("knn", "ray", 2)]) is None
    section = worker_peak_section([*usl_records(ns=(2,)), make_record("knn", "dask", 2)])
    assert section is not None and "skipped: knn: dask ×2" in section.intro


# ---- reference files ---------------------------------------------------------------------

def test_example_reference_file_is_valid_and_overlays_by_workload():
    refs = load_references(EXAMPLE)
    assert refs.series("knn") == {"dask": [(2, 3.78), (4, 2.73), (6, 2.69)],
                                  "ray": [(2, 3.25), (3, 3.19), (4, 3.42)]}
    assert refs.series("resnet18")["ray"] == [(2, 30.6), (3, 25.7), (4, 13.1)]
    section = reference_section([make_record("knn", "ray", 2, [1.625] * 3)], refs)
    assert section is not None and "different setup" in section.intro
    rows = {tuple(c[0] for c in line[:3]): [c[0] for c in line] for line in section.grid[1]}
    assert rows[("knn", "ray", "2")][3:] == ["1.625", "3.250", "0.50×"]
    assert rows[("knn", "dask", "6")][3] == "—"  # not measured here


HEAD = "source: s\nsetup: t\nentries:\n  - "


@pytest.mark.parametrize(("body", "expected"), [
    (HEAD + "{workload: knn, framework: ray, workers: 2, seconds: -1}\n",
     "entries.0.seconds: Input should be greater than 0"),
    (HEAD + "{workload: knnn, framework: ray, workers: 2, seconds: 1}\n",
     "entries.0.workload: unknown workload 'knnn'"),
    (HEAD + "{workload: knn, framework: ray, workers: 2, second: 1}\n",
     "entries.0.second: unknown field; did you mean 'seconds'?"),
    ("setup: t\nentries:\n  - {workload: knn, framework: ray, workers: 2, seconds: 1}\n",
     ".source: required field is missing"),
    ("- 1\n", "expected a mapping"),
])
def test_a_bad_reference_file_is_one_clear_error(tmp_path, body, expected):
    path = tmp_path / "refs.yaml"
    path.write_text(body)
    with pytest.raises(UsageError) as err:
        load_references(path)
    assert expected in str(err.value)
    lines = str(err.value).splitlines()  # one line per wrong field, each naming the field
    assert len(lines) == (2 if "did you mean" in expected else 1)  # (+ "seconds" missing)
    assert all(line.startswith((f"{path}.", f"{path}:")) for line in lines)


def test_a_missing_reference_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_references(tmp_path / "nope.yaml")


# ---- scaling models ----------------------------------------------------------------------

def test_usl_fit_recovers_known_parameters_from_exact_data():
    ns = [1, 2, 4, 8]
    alpha, beta = fit(USL, ns, list(usl(ns, 0.1, 0.01)))
    assert alpha == pytest.approx(0.1, abs=1e-6) and beta == pytest.approx(0.01, abs=1e-7)
    (sigma,) = fit(AMDAHL, ns, list(usl(ns, 0.2, 0.0)))
    assert sigma == pytest.approx(0.2, abs=1e-6)


def test_fit_relative_to_a_base_above_one_worker():
    ns = [2, 4, 8, 16]
    speedups = list(usl(ns, 0.05, 0.002) / usl(2, 0.05, 0.002))
    assert fit(USL, ns, speedups) == pytest.approx((0.05, 0.002), abs=1e-6)


def test_a_fit_refuses_fewer_than_three_worker_counts():
    with pytest.raises(ValueError, match="at least 3 worker counts, got 2"):
        fit(USL, [1, 2], [1.0, 1.8])
    swept = fit_sweep(Sweep("knn", "ray", {1: [2.0], 2: [1.1]}))
    assert swept.fits == [] and swept.reason is not None and "needs at least 3" in swept.reason


def test_sweeps_fit_extrapolate_and_band():
    (swept,) = sweeps(usl_records(), rounds=40)
    usl_fit = next(f for f in swept.fits if f.model.name == "USL")
    assert usl_fit.params == pytest.approx((0.1, 0.01), abs=1e-3)  # medians are exact
    value, lo, hi = usl_fit.at[64]
    assert value == pytest.approx(float(usl(64, 0.1, 0.01)), rel=1e-3)
    assert lo is not None and hi is not None and lo <= value <= hi and hi > lo
    section = scaling_model_section([], [swept])
    assert section is not None and "a model, not a measurement" in section.heading
    assert section.intro.startswith("A MODEL, not a measurement")
    cells = [c[0] for c in section.grid[1][1]]
    assert cells[3] == "USL" and cells[4].startswith("α=0.100 [") and "peak at ≈9" in cells[4]


def test_no_band_without_spread_in_the_repeats():
    recs = [make_record("knn", "dask", n, [4.0 / float(usl(n, 0.2, 0.0))] * 3)
            for n in (1, 2, 4)]
    (swept,) = sweeps(recs)
    amdahl_fit = swept.fits[0]
    assert amdahl_fit.params[0] == pytest.approx(0.2, abs=1e-6)
    assert amdahl_fit.band == {} and amdahl_fit.at[8][1:] == (None, None)


# ---- figures and the reports --------------------------------------------------------------

def test_png_figures_with_models_and_timelines(tmp_path):
    recs = usl_records()
    paths = make_figures(recs, tmp_path, load_references(EXAMPLE), sweeps(recs, rounds=20))
    names = {p.stem for p in paths}
    assert {"time_vs_workers", "scaling_model", "phases", "worker_timelines"} <= names
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_interactive_html_is_self_contained_with_hover(tmp_path):
    recs = usl_records(ns=(1, 2, 4))
    out = write_report(recs, tmp_path / "r.html", "html", references=load_references(EXAMPLE))
    text = out.read_text()
    # bokeh.embed.components: a div per figure and the script that embeds its document.
    assert text.count("data-root-id=") == 4 and "Bokeh.safely" in text
    assert '"name":"HoverTool"' in text  # in the embedded documents' JSON
    # Self-contained: bokeh's own JavaScript inlined, nothing fetched from a CDN.
    assert "cdn.bokeh.org" not in text and "Bokeh.set_log_level" in text
    assert "Published reference numbers (seeds 4 VMs)" in text
    assert "different setup" in text and "data:image/png;base64," in text
    assert "Per-worker CPU and memory peaks" in text
    # A plot title, in bokeh's JSON (its en dash escaped).
    assert re.search(r"n = 20\S{1,8}23 samples per worker", text)


def test_worker_timelines_hold_one_worker_name_per_point():
    """A timeline merges points as they accumulate (bench.measure), so it can hold fewer
    points than the samples taken: each plotted column has one value per point."""
    from bench.report.interactive import worker_timelines

    recs = usl_records(ns=(1, 2))
    for rec in recs:
        for w in rec["resources"]["workers"]:
            w["samples"] = 2 * len(w["timeline"])  # as after one merge
    sources = [r.data_source.data for fig in worker_timelines(recs)
               for plot in fig.children for r in plot.renderers]
    assert sources
    for data in sources:
        assert len({len(column) for column in data.values()}) == 1, {
            k: len(v) for k, v in data.items()}


def test_report_command_with_reference(tmp_path):
    results = tmp_path / "r.jsonl"
    from bench.results import append_record

    for rec in usl_records(ns=(1, 2)):
        append_record(results, rec)
    out = tmp_path / "r.md"
    assert report_command(str(results), str(out), None, None, reference=str(EXAMPLE)) == 0
    text = out.read_text()
    assert "| knn | dask | 6 | — | 2.690 | — |" in text
    assert "no fit: 2 worker count(s) measured" in text
    assert not (tmp_path / "r_figures" / "scaling_model.png").exists()  # nothing fitted
