"""The report's per-operation and per-worker data tables (bench.report.operations), from
synthetic records with known answers."""
from bench.report.operations import data_grid, stage_grid
from bench.report.sections import sections


def _rec(framework, stages=None, data=None, workers=2):
    return {"workload": "etl", "framework": framework, "workers": workers,
            "state": "succeeded", "seconds": [1.0], "median": 1.0,
            "extra": {"stage_seconds": stages} if stages else {}, "data": data}


STAGES = {"ray": {"read": 3.0, "filter": 1.0, "aggregate": 4.0, "join": 1.0, "sort": 6.0,
                  "write": 2.0},
          "dask": {"read": 1.5, "filter": 2.0, "aggregate": 2.0, "join": 0.5, "sort": 2.0,
                   "write": 4.0}}


def test_ray_over_dask_per_operation_and_in_total():
    headers, body = stage_grid([_rec("ray", STAGES["ray"]), _rec("dask", STAGES["dask"])])
    assert headers == ["Workload", "Operation", "ray ×2", "dask ×2", "Ray ÷ Dask ×2"]
    ratio = {row[1][0]: row[-1][0] for row in body}
    assert ratio == {"read": "2.00×", "filter": "0.50×", "aggregate": "2.00×", "join": "2.00×",
                     "sort": "3.00×", "write": "0.50×", "total": "1.42×"}  # 17 / 12


def test_no_stage_table_without_staged_records_and_no_ratio_without_both():
    assert stage_grid([_rec("ray"), _rec("dask")]) is None
    headers, body = stage_grid([_rec("ray", STAGES["ray"])])
    assert headers[-1] == "ray ×2" and len(body) == 7


def test_data_per_worker_rows_and_the_reasons_for_missing_figures():
    dask = {"partitions_by_worker": {"w0": [0, 2], "w1": [1]},
            "bytes_read_by_worker": {"w0": 2_000_000, "w1": 1_000_000},
            "read_tasks_by_worker": {"w0": 2, "w1": 1},
            "read_seconds_by_worker": {"w0": 0.5, "w1": 0.25},
            "peak_rss_by_worker": {"w0": 300_000_000, "w1": 200_000_000}}
    ray = {"partitions_by_worker": None, "bytes_read_by_worker": None,
           "read_tasks_by_worker": {"10.0.0.1": 1}, "read_seconds_by_worker": {"10.0.0.1": 2.0},
           "peak_rss_by_worker": None, "peak_uss_by_worker": {"10.0.0.1": 100_000_000},
           "unavailable": {"partitions_by_worker": "not reported"}}
    (_headers, body), notes = data_grid([_rec("dask", data=dask), _rec("ray", data=ray)])
    cells = [[c for c, _ in row] for row in body]
    assert cells == [["etl", "ray ×2", "10.0.0.1", "—", "—", "1", "2.000", "100.0 USS"],
                     ["etl", "dask ×2", "w0", "2", "2.0", "2", "0.500", "300.0"],
                     ["etl", "dask ×2", "w1", "1", "1.0", "1", "0.250", "200.0"]]
    assert notes == ["etl, ray ×2: partitions_by_worker: not reported"]


def test_the_report_has_the_sections_only_when_records_have_the_figures():
    names = [s.heading for s in sections([_rec("ray", STAGES["ray"]),
                                          _rec("dask", STAGES["dask"])])]
    assert "Per operation: Ray Data vs Dask DataFrame" in names
    assert "Data read per worker" not in names
    assert "Per operation: Ray Data vs Dask DataFrame" not in [
        s.heading for s in sections([_rec("ray"), _rec("dask")])]
