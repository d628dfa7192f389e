"""The libraries tier on real local clusters: etl and xgboost on tiny partitioned datasets
(written by ``bench.data.make_dataset``), their quality figures equal to the single-process
baseline's; Dask's single-machine schedulers run etl's Dask graph in this process."""
import pytest

from bench.data import make_dataset, open_dataset
from bench.engines import make_engine
from bench.errors import RunError
from bench.spec import WorkloadSpec
from bench.workloads import get_workload

pytestmark = pytest.mark.slow

ETL = WorkloadSpec(name="etl", params={"output_partitions": 2}).params
XGB = WorkloadSpec(name="xgboost", params={"rounds": 8, "max_depth": 3, "max_bin": 32}).params


@pytest.fixture(scope="session")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("libraries")
    make_dataset("transactions", str(root / "tx"), rows=3000, partitions=3, keys=200)
    make_dataset("classification", str(root / "cls"), rows=2400, columns=8, partitions=3)
    return {"etl": open_dataset(str(root / "tx")), "xgboost": open_dataset(str(root / "cls"))}


def _run(framework, workload, data, params, engine=None):
    own = engine is None
    if own:
        engine = make_engine(framework, 2)
        engine.start()
    try:
        wl = get_workload(workload)
        state = wl.distribute_partitioned(engine, data, params)
        return wl.run(engine, state, params)
    finally:
        if own:
            engine.stop()


@pytest.fixture(scope="session")
def local(datasets):
    return {name: _run("local", name, datasets[name], ETL if name == "etl" else XGB)
            for name in ("etl", "xgboost")}


def test_etl_baseline_checks_what_it_wrote(local):
    q = local["etl"].quality
    assert q["agg_rows"] == q["out_rows"] > 0  # every customer bought something
    assert q["sorted"] == 1.0 and q["out_files"] == 2.0
    assert local["etl"].extra["rows_per_second"] > 0


@pytest.mark.parametrize("framework", ["dask-threads", "dask-processes", "dask-synchronous"])
def test_etl_on_dask_single_machine_schedulers_equals_pandas(framework, datasets, local):
    out = _run(framework, "etl", datasets["etl"], ETL)
    wl = get_workload("etl")
    assert all(wl.matches(out.quality, local["etl"].quality).values()), out.quality


def test_etl_checksums_equal_the_baseline(cluster, datasets, local):
    out = _run(cluster.framework, "etl", datasets["etl"], ETL, cluster)
    assert get_workload("etl").matches(out.quality, local["etl"].quality) == dict.fromkeys(
        ("agg_rows", "agg_checksum", "out_rows", "out_checksum", "sorted"), True), out.quality


def test_xgboost_metric_within_tolerance_of_the_baseline(cluster, datasets, local):
    if cluster.framework == "dask-on-ray":
        with pytest.raises(RunError, match=r"xgboost\.dask needs a distributed Dask cluster"):
            _run(cluster.framework, "xgboost", datasets["xgboost"], XGB, cluster)
        return
    out = _run(cluster.framework, "xgboost", datasets["xgboost"], XGB, cluster)
    matches = get_workload("xgboost").matches(out.quality, local["xgboost"].quality)
    assert matches == {"logloss": True, "accuracy": True}, (out.quality, local["xgboost"].quality)
    assert out.extra["rounds_per_second"] > 0


@pytest.mark.parametrize("framework", ["dask-threads", "dask-synchronous"])
def test_the_core_dataframe_workload_runs_on_dask_single_machine_schedulers(framework):
    from bench.datasets import load_dataset
    from bench.spec import DatasetSpec

    data = load_dataset(DatasetSpec())
    params = WorkloadSpec(name="dataframe", params={"rows": 5000, "keys": 50}).params
    quality = {}
    for name in ("local", framework):
        engine = make_engine(name, 2)
        engine.start()
        try:
            wl = get_workload("dataframe")
            quality[name] = wl.run(engine, wl.distribute(engine, data, params), params).quality
        finally:
            engine.stop()
    assert all(get_workload("dataframe").matches(quality[framework], quality["local"]).values())
    assert quality[framework]["sorted"] == 1.0
