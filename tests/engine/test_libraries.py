"""The libraries tier on real local clusters: etl and xgboost on tiny partitioned datasets
(written by ``bench.data.make_dataset``), their quality figures equal to the single-process
baseline's; Dask's single-machine schedulers run etl's Dask graph in this process."""
import threading

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
    # Ray Data's own default shuffle, recorded (Ray 2.60: ray/data/context.py,
    # DEFAULT_SHUFFLE_STRATEGY); Dask has none to record.
    assert out.extra["ray_shuffle"] == ("shuffle_v2" if cluster.framework == "ray" else None)


@pytest.mark.parametrize("cluster", ["ray"], indirect=True)
def test_ray_etl_writes_sorted_files_from_many_small_blocks(cluster, datasets, local):
    """With 256-byte blocks every partition is many blocks, as on real data: the files Ray Data
    writes stay sorted and disjoint (a repartition after the sort merged blocks out of order;
    the scaling run caught it at 2 workers)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before = ctx.target_max_block_size
    ctx.target_max_block_size = 256
    try:
        out = _run("ray", "etl", datasets["etl"], {**ETL, "ray_shuffle": "sort_shuffle_pull_based"},
                   cluster)
    finally:
        ctx.target_max_block_size = before
    assert out.quality == local["etl"].quality, out.quality


def test_xgboost_metric_within_tolerance_of_the_baseline(cluster, datasets, local):
    if cluster.framework == "dask-on-ray":
        with pytest.raises(RunError, match=r"xgboost\.dask needs a distributed Dask cluster"):
            _run(cluster.framework, "xgboost", datasets["xgboost"], XGB, cluster)
        return
    out = _run(cluster.framework, "xgboost", datasets["xgboost"], XGB, cluster)
    matches = get_workload("xgboost").matches(out.quality, local["xgboost"].quality)
    assert matches == {"logloss": True, "accuracy": True}, (out.quality, local["xgboost"].quality)
    assert out.extra["rounds_per_second"] > 0
    _xgboost_reads_add_up(out.data, datasets["xgboost"], cluster.framework)


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


# -- etl's stages and the per-worker data figures (issue 14) ---------------------------------
STAGED = WorkloadSpec(name="etl", params={"output_partitions": 2, "stages": True}).params
OPERATIONS = ["read", "filter", "aggregate", "join", "sort", "write"]


def _manifest_bytes(data, columns=None):
    from bench.data.readers import read_table

    return sum(read_table(data, i, columns)[1] for i in range(len(data.partitions)))


def _adds_up(block, data, sizes_total, reads=None):
    """The per-worker figures of a data block cover every partition, once, and its bytes."""
    n = len(data.partitions)
    assert block["partitions"] == list(range(n))
    assert block["reads"] == (n if reads is None else reads)
    assert block["bytes_read"] == sizes_total
    assert all(s > 0 for s in block["read_seconds_by_worker"].values())
    assert set(block["read_seconds_by_worker"]) == set(block["read_tasks_by_worker"])
    if block["partitions_by_worker"] is not None:
        parts = [p for ps in block["partitions_by_worker"].values() for p in ps]
        assert sorted(set(parts)) == list(range(n))
        assert sum(block["bytes_read_by_worker"].values()) >= sizes_total


def test_etl_stages_time_each_operation_with_the_fused_checksums(cluster, datasets, local):
    """Ray runs it with the sort-based shuffle (``ray_shuffle``: what the scaling run needs
    on 512 MiB nodes), which gives the same checksums; the driver's DataContext is left as it
    was."""
    from ray.data import DataContext

    data = datasets["etl"]
    before = DataContext.get_current().shuffle_strategy
    params = {**STAGED, "ray_shuffle": "sort_shuffle_pull_based"}
    out = _run(cluster.framework, "etl", data, params, cluster)
    assert out.quality == local["etl"].quality  # the same checksums as the fused runs
    assert DataContext.get_current().shuffle_strategy == before
    if cluster.framework == "ray":
        assert out.extra["ray_shuffle"] == "sort_shuffle_pull_based"
    stages = out.extra["stage_seconds"]
    assert list(stages) == OPERATIONS and all(s > 0 for s in stages.values()), stages
    assert sum(stages.values()) <= out.extra["pipeline_seconds"]
    block = out.data
    if cluster.framework == "dask-on-ray":  # Dask on Ray's scheduler: no task stream
        assert block["read_seconds_by_worker"] is None and "task stream" in \
            block["unavailable"]["per_worker"]
        return
    _adds_up(block, data, _manifest_bytes(data, ["customer", "amount", "quantity"]))
    if cluster.framework == "ray":  # Ray Data: no task's files, USS rather than RSS
        assert block["partitions_by_worker"] is None and block["peak_rss_by_worker"] is None
        assert set(block["unavailable"]) == {"partitions_by_worker", "bytes_read_by_worker",
                                             "peak_rss_by_worker"}
        assert all(b > 0 for b in block["peak_uss_by_worker"].values())
    else:
        assert set(block["partitions_by_worker"]) <= {"w0", "w1"}
        assert sum(block["bytes_read_by_worker"].values()) == block["bytes_read"]
        assert all(b > 0 for b in block["peak_rss_by_worker"].values())


def test_etl_fused_says_why_it_has_no_per_worker_figures(local, datasets):
    block = local["etl"].data
    assert block["bytes_read"] == _manifest_bytes(datasets["etl"],
                                                  ["customer", "amount", "quantity"])
    assert block["partitions_by_worker"] is None and "stages" in \
        block["unavailable"]["per_worker"]


def _xgboost_reads_add_up(block, data, framework):
    """Every file read once (Ray Train: the held-out one by every rank), on 2 workers."""
    test = len(data.partitions) - 1
    ranks = len(block["partitions_by_worker"])
    reads = len(data.partitions) + (ranks - 1 if framework == "ray" else 0)
    columns = [f["name"] for f in data.manifest["schema"]]  # read by name: every column
    sizes = [_manifest_bytes_of(data, i, columns) for i in range(len(data.partitions))]
    total = sum(sizes) + (reads - len(data.partitions)) * sizes[test]
    _adds_up(block, data, total, reads)
    assert sum(block["bytes_read_by_worker"].values()) == total
    assert ranks == 2 and all(b > 0 for b in block["peak_rss_by_worker"].values())


def _manifest_bytes_of(data, index, columns):
    from bench.data.readers import read_table

    return read_table(data, index, columns)[1]


def test_etl_on_data_larger_than_a_workers_memory_limit(tmp_path, monkeypatch):
    """The issue's point, small: a transactions table of ~650 MiB in memory (the three columns
    etl reads) on 2 workers limited to 512 MiB each, through the runner as a user runs it.
    Dask's nanny enforces the limit (it kills a worker past 95 %); Ray's limit is its
    scheduling resource and its object store (128 MiB), which the shuffle overflows to disk.
    Both finish with the pandas baseline's checksums; no Dask worker passes its limit and Ray
    says it spilled."""
    import pyarrow.parquet as pq

    from bench.runner import run_benchmark
    from bench.spec import parse_spec

    # What Dask's nanny sets for its workers (MALLOC_TRIM_THRESHOLD_), and Arrow's buffers on
    # the same allocator, so freed memory goes back (benchmarks/bench_scaling.py, MEMORY_ENV).
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    limit = 512 * 2**20
    uri = str(tmp_path / "tx")
    make_dataset("transactions", uri, rows=33_000_000, partitions=32, seed=5)
    data = open_dataset(uri)
    in_memory = sum(pq.read_table(data.path(p), columns=["customer", "amount", "quantity"]
                                  ).nbytes for p in data.partitions[:1]) * len(data.partitions)
    assert in_memory > limit * 1.2, in_memory
    spec = parse_spec({
        "name": "beyond-memory", "frameworks": ["ray", "dask"], "workers": [2], "repeats": 1,
        "warmup": 0, "baselines": True, "timeoutSeconds": 600,
        "workerResources": {"cpu": 1, "memory": "512Mi"},
        "dataset": {"name": "parquet", "uri": uri},
        "workloads": [{"name": "etl", "params": {"ray_shuffle": "sort_shuffle_pull_based"}}]})
    recs = {(r["framework"], r["workers"]): r
            for r in run_benchmark(spec, str(tmp_path / "r.jsonl")).records}
    assert all(r["state"] == "succeeded" for r in recs.values()), \
        {k: r.get("error") for k, r in recs.items()}
    baseline = recs[("local", 1)]["quality"]
    wl = get_workload("etl")
    for fw in ("ray", "dask"):
        quality = recs[(fw, 2)]["quality"]
        assert set(wl.matches(quality, baseline)) == set(wl.tolerance), quality
        assert all(wl.matches(quality, baseline).values()), (fw, quality, baseline)
        assert quality["sorted"] == 1.0 and quality["out_rows"] > 0
    dask = recs[("dask", 2)]["resources"]
    assert 0 < dask["rss_peak_max_worker"] < limit, dask["rss_peak_max_worker"]
    assert recs[("ray", 2)]["data"]["spilled"]["ray_spilled_bytes"] > 0


def test_a_timed_out_ray_data_trial_is_cancelled_while_its_cluster_is_up(tmp_path, capfd):
    """A Ray ``etl`` trial that runs out of time mid-pipeline. The runner raises TrialCancelled
    in the trial's thread, Ray Data's executor shuts down (cancelling its tasks) while the
    cluster is still up, and the thread ends: nothing is left running against the stopped
    cluster. Before, the abandoned executor's clean-up ran after the cluster was gone and
    Ray's auto-init tried to connect to whatever cluster /tmp/ray named, with pages of
    tracebacks on the console."""
    import ray

    from bench import runner
    from bench.spec import parse_spec

    uri = str(tmp_path / "tx")
    # ~10 s per etl run on one Ray worker here: 20 repeats cannot finish in the time given.
    make_dataset("transactions", uri, rows=2_000_000, partitions=16, seed=3)
    spec = parse_spec({
        "name": "etl-timeout", "frameworks": ["ray"], "workers": [1], "repeats": 20,
        "warmup": 0, "baselines": False, "timeoutSeconds": 45,
        "dataset": {"name": "parquet", "uri": uri}, "workloads": [{"name": "etl"}]})
    abandoned_before = list(runner.ABANDONED)
    [rec] = runner.run_benchmark(spec, str(tmp_path / "r.jsonl")).records
    assert rec["state"] == "failed" and "timed out after" in rec["error"], rec.get("error")
    left = [t.name for t in runner.ABANDONED if t not in abandoned_before]
    assert not left, f"the trial's thread did not end when cancelled: {left}"
    assert not [t for t in threading.enumerate() if t.name.startswith("trial-etl")]
    assert not ray.is_initialized()
    console = capfd.readouterr()
    text = console.out + console.err
    assert "Exception occurred in Ray Data" not in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
