"""Partitioned datasets read by the workers of real local Ray, Dask and Dask-on-Ray clusters
(two workers each), from a local directory and from a real S3 server (SeaweedFS,
tests/support/s3server.py): every partition read once, by a worker process (never the
driver), and the record's ``data`` field says which worker read what, how long it took and
its peak RSS. One S3 server and one cluster per framework for the whole module."""
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.data import data_record, make_dataset, open_dataset, read_partitions, spilled
from bench.data.readers import dask_dataframe, largest_partition_bytes, ray_dataset
from bench.data.upload import upload
from bench.engines import make_engine
from bench.errors import UsageError
from bench.frameworks import cluster_kind

from support.s3server import s3_server, weed_binary

pytestmark = pytest.mark.slow


def amount_sum(table: pa.Table) -> float:
    return float(pc.sum(table["amount"]).as_py())


@pytest.fixture(scope="module")
def s3():
    """The S3 server, its endpoint and credentials in this process's environment (so the
    clusters started after it inherit them), or None without the binary."""
    binary = weed_binary()
    if binary is None:
        yield None
        return
    with s3_server(binary) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        yield server
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("transactions"))
    make_dataset("transactions", uri, rows=6000, partitions=6, seed=3)
    return open_dataset(uri)


@pytest.fixture(scope="module")
def s3_dataset(s3, local_dataset):
    if s3 is None:
        pytest.skip("no SeaweedFS binary (scripts/s3server.sh builds it; CI runs it)")
    uri = f"s3://{s3.bucket}/transactions"
    upload(local_dataset.uri, uri)
    return open_dataset(uri)


@pytest.fixture(params=["local", "s3"])
def dataset(request):
    return request.getfixturevalue(f"{request.param}_dataset")


@pytest.fixture(scope="module", params=["ray", "dask", "dask-on-ray"])
def engine(request, s3):
    e = make_engine(request.param, 2, startup_timeout=180)
    e.start()
    yield e
    e.stop()


def test_workers_read_their_own_partitions(engine, dataset, local_dataset):
    read = read_partitions(engine, dataset, amount_sum, columns=["amount"])
    expected = [amount_sum(pq.read_table(p, columns=["amount"]))
                for p in local_dataset.partitions]
    assert read.results == pytest.approx(expected)
    assert all(r["pid"] != os.getpid() for r in read.reads)  # the driver read nothing
    rec = data_record(dataset, read.reads, spilled(engine))
    assert rec["uri"] == dataset.uri and rec["partitions"] == list(range(6))
    by_worker = rec["partitions_by_worker"]
    if engine.framework == "dask-on-ray":
        # Ray's default scheduling (which ray_dask_get keeps) may run every one of these short
        # tasks in the one worker process it leased first: only workers' names, none other.
        assert by_worker and set(by_worker) <= set(engine.worker_names())
    else:  # Ray tasks here are SPREAD; Dask's scheduler gives both idle workers root tasks
        assert set(by_worker) == set(engine.worker_names())  # both read, nothing else did
    assert sorted(p for ps in by_worker.values() for p in ps) == list(range(6))
    assert 0 < rec["bytes_read"] < dataset.total_bytes / 3  # the amount column only
    assert set(rec["read_seconds_by_worker"]) == set(rec["peak_rss_by_worker"]) == set(by_worker)
    assert all(s > 0 for s in rec["read_seconds_by_worker"].values())
    assert all(b > 20 * 2**20 for b in rec["peak_rss_by_worker"].values())
    # 6,000 rows spill nothing (Dask-on-Ray's objects live in Ray's object store)
    assert rec["spilled"] == {f"{cluster_kind(engine.framework)}_spilled_bytes": 0}


def test_the_libraries_read_from_s3(engine, s3_dataset, local_dataset):
    if engine.framework == "ray":
        total = ray_dataset(s3_dataset, columns=["amount"]).sum("amount")
    else:
        with engine.dask_context():
            total = dask_dataframe(s3_dataset, columns=["amount"])["amount"].sum().compute()
    assert total == pytest.approx(sum(amount_sum(pq.read_table(p))
                                      for p in local_dataset.partitions))


def test_cli_makes_and_uploads_to_s3(s3, s3_dataset, tmp_path, capsys):
    assert main(["data", "make", "--kind", "blobs", "--rows", "3000", "--columns", "3",
                 "--partitions", "3", f"s3://{s3.bucket}/blobs"]) == 0
    data = open_dataset(f"s3://{s3.bucket}/blobs")
    assert data.manifest["rows"] == 3000 and len(data.partitions) == 3
    assert "blobs, 3,000 rows in 3 partitions" in capsys.readouterr().out
    make_dataset("classification", str(tmp_path), rows=1000, columns=2, partitions=2)
    assert main(["data", "upload", str(tmp_path), f"s3://{s3.bucket}/up"]) == 0
    assert "uploaded" in capsys.readouterr().out
    up = open_dataset(f"s3://{s3.bucket}/up")
    assert pq.read_table(up.partitions[1].replace(f"s3://{s3.bucket}/up", str(tmp_path))
                         ).equals(pq.read_table(up.path(up.partitions[1]),
                                                filesystem=up.filesystem()[0]))
    assert main(["data", "upload", str(tmp_path), f"s3://{s3.bucket}/up"]) == 2
    assert "a dataset exists there already (use --overwrite)" in capsys.readouterr().err


def test_s3_errors_are_one_line(s3, s3_dataset, monkeypatch):
    with pytest.raises(UsageError, match=r"nothing-here: does not exist$"):
        open_dataset(f"s3://{s3.bucket}/nothing-here")
    with pytest.raises(UsageError,
                       match=r"s3://no-such-bucket/x: the bucket 'no-such-bucket' does not exist"):
        open_dataset("s3://no-such-bucket/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(UsageError, match="access denied"):
        open_dataset(s3_dataset.uri)


@pytest.fixture(scope="module")
def features_dataset(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("classification"))
    make_dataset("classification", uri, rows=4000, columns=6, partitions=4, seed=2)
    return open_dataset(uri)


def test_pca_partitioned_mode_reads_on_the_workers(engine, features_dataset):
    """PCA's covariance from the partitions each task read itself equals scikit-learn's PCA
    of the whole dataset, and the outcome carries the record's data field."""
    from sklearn.decomposition import PCA

    from bench.workloads import get_workload

    params = {"n_components": 3, "chunks_per_worker": 2}
    wl = get_workload("pca")
    state = wl.distribute_partitioned(engine, features_dataset, params)
    out = wl.run(engine, state, params)
    X = pa.concat_tables([pq.read_table(p) for p in features_dataset.partitions]
                         ).drop(["label"]).to_pandas().to_numpy(dtype=float)
    expected = PCA(3, svd_solver="full").fit(X).explained_variance_ratio_.sum()
    assert out.quality["explained_variance"] == pytest.approx(expected, abs=1e-9)
    assert out.data["partitions"] == [0, 1, 2, 3]
    assert set(out.data["partitions_by_worker"]) <= set(engine.worker_names())
    assert out.data["bytes_read"] < features_dataset.total_bytes  # the feature columns only


def test_kmeans_lloyd_partitioned_mode_matches_scikit_learn(engine, features_dataset):
    """Lloyd steps over the partitions the tasks read themselves reach scikit-learn's inertia
    from the same initial centres (k-means++ on the tasks' samples)."""
    from sklearn.cluster import KMeans

    from bench.workloads import get_workload

    params = {"n_clusters": 3, "n_init": 1, "max_iter": 30, "strategy": "lloyd", "seed": 0}
    wl = get_workload("kmeans")
    state = wl.distribute_partitioned(engine, features_dataset, params)
    out = wl.run(engine, state, params)
    X = pa.concat_tables([pq.read_table(p) for p in features_dataset.partitions]
                         ).drop(["label"]).to_pandas().to_numpy(dtype=float)
    km = KMeans(3, init=state["centers0"], n_init=1, max_iter=30, algorithm="lloyd").fit(X)
    assert out.quality["inertia"] == pytest.approx(km.inertia_, rel=0.02)
    steps = out.extra["iterations"] + 1  # and the final inertia pass
    assert out.data["reads"] == 4 * steps and out.data["partitions"] == [0, 1, 2, 3]
    assert out.data["bytes_read"] > steps * 0.5 * features_dataset.total_bytes / 2
    # (a partition may be read by one worker in one step and by the other in the next)
    assert set().union(*out.data["partitions_by_worker"].values()) == {0, 1, 2, 3}
    assert set(out.data["partitions_by_worker"]) <= set(engine.worker_names())


def _run_partitioned(framework_or_engine, name, data, params):
    """distribute_partitioned + run of workload ``name``: on the given engine, or on an
    in-process one (the baseline, Dask's single-machine schedulers) started for the call."""
    from bench.params import PARAMS
    from bench.workloads import get_workload

    wl = get_workload(name)
    params = PARAMS[name](**params).model_dump()  # the defaults, as the runner fills them
    if isinstance(framework_or_engine, str):
        with make_engine(framework_or_engine, 2) as e:
            return wl.run(e, wl.distribute_partitioned(e, data, params), params)
    e = framework_or_engine
    return wl.run(e, wl.distribute_partitioned(e, data, params), params)


def _assert_each_worker_read_its_own(rec, engine, expected):
    by_worker = rec["partitions_by_worker"]
    assert set(by_worker) <= set(engine.worker_names())  # workers read, the driver did not
    assert sorted(p for ps in by_worker.values() for p in ps) == expected  # each one once
    assert rec["reads"] == len(expected) and rec["partitions"] == expected
    assert set(rec["read_seconds_by_worker"]) == set(rec["peak_rss_by_worker"]) == set(by_worker)
    assert all(b > 20 * 2**20 for b in rec["peak_rss_by_worker"].values())


KNN = {"n_neighbors": 5, "chunks_per_worker": 1, "train_partitions": 1}


@pytest.fixture(scope="module")
def knn_baseline(features_dataset):
    return _run_partitioned("local", "knn", features_dataset, KNN)


def test_knn_partitioned_mode_classifies_each_query_partition_where_it_is_read(
        engine, features_dataset, knn_baseline):
    """The first partition is the (broadcast) training set; each task reads one query
    partition. The accuracy is scikit-learn's on the same split, as on the baseline."""
    from sklearn.neighbors import KNeighborsClassifier

    out = _run_partitioned(engine, "knn", features_dataset, KNN)
    tables = [pq.read_table(p).to_pandas() for p in features_dataset.partitions]
    train, test = tables[0], pa.concat_tables(
        [pq.read_table(p) for p in features_dataset.partitions[1:]]).to_pandas()
    model = KNeighborsClassifier(5, algorithm="brute").fit(
        train.drop(columns="label").to_numpy(float), train["label"])
    expected = float((model.predict(test.drop(columns="label").to_numpy(float))
                      == test["label"]).mean())
    assert expected > 0.5 and out.quality["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert out.quality == knn_baseline.quality
    assert knn_baseline.data["partitions_by_worker"] == {"driver": [1, 2, 3]}
    _assert_each_worker_read_its_own(out.data, engine, [1, 2, 3])
    sizes = features_dataset.sizes
    assert out.data["bytes_read"] == sum(sizes[1:])  # whole files: features and label
    assert out.extra["train_bytes_read"] == sizes[0]
    assert out.data["bytes_read"] + out.extra["train_bytes_read"] == \
        features_dataset.manifest["bytes"]
    assert out.extra["broadcast_bytes"] == 1000 * (6 * 8 + 8)  # float64 features, int64 labels


@pytest.fixture(scope="module")
def dataframe_baseline(local_dataset):
    """The dataframe workload on the baseline and on Dask's in-process schedulers, and the
    bytes its three columns take in the files (from the Parquet footers)."""
    out = {fw: _run_partitioned(fw, "dataframe", local_dataset, {})
           for fw in ("local", "dask-threads", "dask-synchronous", "dask-processes")}
    columns = {"customer", "amount", "quantity"}
    out["column_bytes"] = sum(
        rg.column(j).total_compressed_size
        for p in local_dataset.partitions for md in [pq.ParquetFile(p).metadata]
        for rg in (md.row_group(i) for i in range(md.num_row_groups))
        for j in range(rg.num_columns) if rg.column(j).path_in_schema in columns)
    return out


def test_dataframe_partitioned_mode_reads_on_the_workers(engine, local_dataset,
                                                         dataframe_baseline):
    """Each task reads its own transactions partition; the groupby and the sort give the
    baseline's figures (pandas on the whole table, checked here against pyarrow) on every
    framework, and the bytes read are the three columns' chunks of every file."""
    local = dataframe_baseline["local"]
    table = pa.concat_tables([pq.read_table(p) for p in local_dataset.partitions])
    agg = table.group_by("customer").aggregate([("amount", "mean"), ("quantity", "sum"),
                                                ("amount", "count")])
    checksum = (pc.sum(agg["amount_mean"]).as_py() + pc.sum(agg["quantity_sum"]).as_py()
                + pc.sum(agg["amount_count"]).as_py())
    assert local.quality == pytest.approx({"groups": agg.num_rows, "agg_checksum": checksum,
                                           "sorted_rows": 6000, "sorted": 1.0}, rel=1e-12)
    out = _run_partitioned(engine, "dataframe", local_dataset, {})
    for quality in (out.quality, dataframe_baseline["dask-threads"].quality,
                    dataframe_baseline["dask-synchronous"].quality,
                    dataframe_baseline["dask-processes"].quality):
        assert quality == pytest.approx(local.quality, rel=1e-12)
    _assert_each_worker_read_its_own(out.data, engine, list(range(6)))
    assert out.data["bytes_read"] == dataframe_baseline["column_bytes"]
    for fw in ("local", "dask-threads", "dask-synchronous"):
        rec = dataframe_baseline[fw].data
        assert rec["partitions_by_worker"] == {"driver": list(range(6))} and rec["reads"] == 6
        assert rec["bytes_read"] == dataframe_baseline["column_bytes"]
    # Dask's processes scheduler reads in its pool's processes: each one a reader of its own
    rec = dataframe_baseline["dask-processes"].data
    pool = rec["partitions_by_worker"]
    assert pool and all(w.startswith("process-") and w != f"process-{os.getpid()}" for w in pool)
    assert sorted(p for ps in pool.values() for p in ps) == list(range(6)) and rec["reads"] == 6
    assert set(rec["peak_rss_by_worker"]) == set(pool)
    assert rec["bytes_read"] == dataframe_baseline["column_bytes"]


def _operators(op, name):
    """The logical plan's operators of type ``name`` (a Ray Data plan is a DAG of them)."""
    found, stack = [], [op]
    while stack:
        o = stack.pop()
        found += [o] if type(o).__name__ == name else []
        stack.extend(o.input_dependencies)
    return found


@pytest.mark.parametrize("engine", ["ray"], indirect=True)
def test_ray_data_reads_one_file_per_task_with_a_footer_actor_per_node(engine, local_dataset):
    """Pins what bench.data.readers.ray_read_settings relies on in Ray Data 2.60's Parquet
    reader (datasource V2): read_parquet builds the file indexer and partitioner in the calling
    process from RAY_DATA_PARQUET_FOOTER_NUM_ACTORS (default 32) and
    RAY_DATA_PARQUET_BIN_PACKING_BYTES (default 128 MiB, which packs these six small files
    into one read task)."""
    import ray.data

    columns = ["customer", "amount"]
    paths = [local_dataset.path(p) for p in local_dataset.partitions]
    ds = ray_dataset(local_dataset, columns, workers=engine.workers)
    (listing,) = _operators(ds._logical_plan.dag, "ListFiles")
    assert listing.file_indexer._num_actors == engine.workers == 2
    assert listing.file_partitioner._cap == largest_partition_bytes(local_dataset, columns)
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ  # restored after the call
    assert ds.materialize().num_blocks() == 6  # one read task (and block) per file
    default = ray.data.read_parquet(paths).select_columns(columns)
    (listing,) = _operators(default._logical_plan.dag, "ListFiles")
    assert listing.file_indexer._num_actors == 32
    assert default.materialize().num_blocks() == 1
    assert ds.sum("amount") == pytest.approx(default.sum("amount"))
