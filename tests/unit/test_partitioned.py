"""Partitioned datasets (bench.data) on local directories: make, open, the spec's parquet
form, bad input; reads on the local baseline (real Ray/Dask reads: engine/test_partitioned)."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.data import KINDS, data_record, make_dataset, open_dataset, read_partitions
from bench.datasets import load_dataset
from bench.engines import make_engine
from bench.errors import UsageError
from bench.runner import check_workloads
from bench.spec import SpecError, parse_spec


@pytest.mark.parametrize("kind", KINDS)
def test_make_and_open_every_kind(tmp_path, kind):
    uri = str(tmp_path / kind)
    seen = []
    manifest = make_dataset(kind, uri, rows=3001, columns=5, partitions=3, seed=7,
                            row_group_rows=500, progress=lambda *a: seen.append(a))
    data = open_dataset(uri)
    assert data.manifest == manifest == json.loads((tmp_path / kind / "_manifest.json").read_text())
    assert data.partitions == [f"{uri}/part-{i:05d}.parquet" for i in range(3)]
    assert data.total_bytes == sum(os.path.getsize(p) for p in data.partitions)
    files = 4 if kind == "transactions" else 3
    assert [s[:2] for s in seen] == [(i, files) for i in range(1, files + 1)]
    assert seen[-1][2] == manifest["bytes"]
    tables = [pq.read_table(p) for p in data.partitions]
    assert [t.num_rows for t in tables] == [1001, 1000, 1000] == manifest["partition_rows"]
    assert pq.ParquetFile(data.partitions[0]).metadata.num_row_groups == 3
    fs, path = data.filesystem()
    assert path == str(tmp_path / kind) and fs.type_name == "local"
    if kind == "transactions":
        assert data.dimension_uri == f"{uri}/customers/part-00000.parquet"
        ids = np.concatenate([t["id"].to_numpy() for t in tables])
        assert (ids == np.arange(3001)).all()  # one global row number across partitions
        dim = pq.read_table(data.dimension_uri)
        assert dim["customer"].to_pylist() == list(range(1000))
        assert max(max(t["customer"].to_pylist()) for t in tables) < 1000
        assert [f["name"] for f in manifest["schema"]] == [
            "id", "customer", "category", "amount", "quantity", "day"]
    else:
        assert data.dimension_uri is None
        assert tables[0].schema.field("f0").type == "float"
        assert tables[0].schema.field("label").type == "int32"
        assert set(np.unique(tables[0]["label"].to_numpy())) == {0, 1}


def test_same_seed_same_data_any_partitioning_of_the_writes(tmp_path):
    a = make_dataset("classification", str(tmp_path / "a"), rows=2000, columns=4, partitions=2)
    b = make_dataset("classification", str(tmp_path / "b"), rows=2000, columns=4, partitions=2)
    c = make_dataset("classification", str(tmp_path / "c"), rows=2000, columns=4, partitions=2,
                     seed=1)
    ta, tb, tc = (pq.read_table(tmp_path / n / "part-00001.parquet") for n in "abc")
    assert a["schema"] == b["schema"] and ta.equals(tb) and not ta.equals(tc)
    del c


def test_classification_is_learnable(tmp_path):
    """The classes are separable like make_classification's (not noise): nearest class mean
    of one partition classifies another."""
    make_dataset("classification", str(tmp_path), rows=4000, columns=8, partitions=2)
    train, test = (pq.read_table(tmp_path / f"part-0000{i}.parquet").to_pandas() for i in (0, 1))
    means = train.groupby("label").mean()
    X = test.drop(columns="label").to_numpy()
    dist = ((X[:, None, :] - means.to_numpy()[None]) ** 2).sum(axis=2)
    assert (means.index.to_numpy()[dist.argmin(axis=1)] == test["label"].to_numpy()).mean() > 0.7


@pytest.mark.parametrize(("kw", "message"), [
    ({"kind": "nope"}, "kind: unknown dataset kind 'nope'"),
    ({"rows": 0}, "rows: expected an integer >= 1, got 0"),
    ({"partitions": 11, "rows": 10}, "partitions: 11 partitions for 10 rows"),
    ({"columns": True}, "columns: expected an integer >= 1, got True"),
    ({"kind": "classification", "classes": 9, "columns": 4}, "classes: 9 classes need more"),
])
def test_make_rejects_bad_input(tmp_path, kw, message):
    args = {"kind": "blobs", "uri": str(tmp_path / "d"), "rows": 100, "columns": 4,
            "partitions": 2} | kw
    with pytest.raises(UsageError, match=message):
        make_dataset(**args)


def test_make_refuses_to_overwrite_unless_asked(tmp_path):
    make_dataset("blobs", str(tmp_path), rows=100, columns=2, partitions=1)
    with pytest.raises(UsageError, match="a dataset exists there already"):
        make_dataset("blobs", str(tmp_path), rows=100, columns=2, partitions=1)
    assert make_dataset("blobs", str(tmp_path), rows=200, columns=2, partitions=1,
                        overwrite=True)["rows"] == 200


def test_open_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        open_dataset(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match=r"no _manifest\.json"):
        open_dataset(str(tmp_path))
    make_dataset("blobs", str(tmp_path / "d"), rows=100, columns=2, partitions=3)
    os.remove(tmp_path / "d" / "part-00001.parquet")
    with pytest.raises(UsageError, match=r"1 of 3 partition files missing \(first: part-00001"):
        open_dataset(str(tmp_path / "d"))
    (tmp_path / "d" / "_manifest.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        open_dataset(str(tmp_path / "d"))
    (tmp_path / "d" / "_manifest.json").write_text('{"kind": "blobs"}')
    with pytest.raises(UsageError, match="missing rows, columns, partitions, seed, bytes"):
        open_dataset(str(tmp_path / "d"))
    with pytest.raises(UsageError, match="only local directories and s3://"):
        open_dataset("gs://bucket/x")


def test_spec_parquet_form_loads_without_reading_the_data(tmp_path):
    make_dataset("blobs", str(tmp_path), rows=500, columns=3, partitions=2)
    spec = parse_spec({"dataset": {"name": "parquet", "uri": str(tmp_path)},
                       "workloads": [{"name": "gridsearch"}]})
    for p in tmp_path.glob("part-*"):
        p.write_bytes(b"corrupt: loading must not read the partitions")
    data = load_dataset(spec.dataset)
    assert data.meta["samples"] == 500 and data.meta["partitions"] == 2
    with pytest.raises(UsageError,
                       match=r"workloads\.0\.name: gridsearch needs in-memory data"):
        check_workloads(spec, data)


@pytest.mark.parametrize(("dataset", "message"), [
    ({"name": "parquet"}, "spec.dataset: dataset 'parquet' needs 'uri'"),
    ({"name": "parquet", "uri": "http://x/y"},
     "spec.dataset.uri: 'http://x/y' is not a directory or s3://bucket/prefix"),
    ({"name": "parquet", "uri": "s3://bucket"}, "spec.dataset.uri: 's3://bucket' is not a"),
    ({"name": "parquet", "uri": "/d", "format": "csv"},
     "spec.dataset.format: the parquet dataset does not use format"),
    ({"name": "s3", "uri": "/d"}, "spec.dataset.uri: '/d' is not of the form s3://bucket/key"),
])
def test_spec_rejects_bad_parquet_datasets(dataset, message):
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_spec({"dataset": dataset})


def test_reads_on_the_baseline_record_every_partition(tmp_path):
    make_dataset("transactions", str(tmp_path), rows=3000, partitions=3)
    data = open_dataset(str(tmp_path))
    engine = make_engine("local", 2)
    engine.start()
    try:
        read = read_partitions(engine, data, columns=["amount"])
    finally:
        engine.stop()
    assert read.results == [1000, 1000, 1000]
    rec = data_record(data, read.reads, {})
    assert rec["partitions"] == [0, 1, 2] and rec["partitions_by_worker"] == {"driver": [0, 1, 2]}
    assert rec["reads"] == 3
    assert 0 < rec["bytes_read"] < data.total_bytes / 3  # the amount column's chunks only
    assert data_record(data, read_partitions(make_engine("local", 1), data).reads
                       )["bytes_read"] == data.total_bytes  # every column: the whole files
    assert rec["read_seconds_by_worker"]["driver"] > 0
    assert rec["peak_rss_by_worker"]["driver"] > 10 * 2**20


def test_cli_data_make_writes_a_dataset_with_a_progress_bar(tmp_path, capsys):
    from bench.cli import main

    uri = str(tmp_path / "tx")
    assert main(["data", "make", "--kind", "transactions", "--rows", "2000", "--partitions",
                 "2", "--seed", "5", uri]) == 0
    out = capsys.readouterr().out
    assert "writing" in out and "3/3" in out  # the bar: 2 partitions + the dimension table
    assert f"{uri}: transactions, 2,000 rows in 2 partitions" in out
    assert open_dataset(uri).manifest["seed"] == 5


@pytest.mark.parametrize(("argv", "message"), [
    (["make", "--rows", "10", "--partitions", "20", "{d}/x"],
     "testbed: error: partitions: 20 partitions for 10 rows"),
    (["make", "--rows", "0", "{d}/x"], "argument --rows: must be at least 1, got 0"),
    (["make", "--kind", "nope", "--rows", "5", "{d}/x"], "argument --kind: invalid choice"),
    (["make", "--rows", "100", "gs://b/x"], "only local directories and s3://bucket/prefix"),
    (["upload", "{d}", "/not/s3"], "testbed: error: uri: '/not/s3' is not of the form s3://"),
    (["upload", "{d}/missing", "s3://b/x"], "local_dir: '{d}/missing' is not a directory"),
    (["upload", "{d}", "s3://b/x"], "dataset.uri {d}: no _manifest.json"),
])
def test_cli_data_bad_input_is_one_line(tmp_path, capsys, argv, message):
    from bench.cli import main

    args = ["data", *(a.format(d=str(tmp_path)) for a in argv)]
    if "argument" in message:  # argparse's own check
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
    else:
        assert main(args) == 2
    out, err = capsys.readouterr()
    assert message.format(d=str(tmp_path)) in err and "Traceback" not in err
    assert "writing" not in out  # no progress bar before the input is checked


def test_a_run_on_a_partitioned_dataset_records_what_was_read(tmp_path):
    """The runner hands a partitioned dataset to a workload with a partitioned mode (PCA) and
    its record gets the data field; n_components beyond the manifest's features is one line."""
    from bench.runner import run_benchmark

    make_dataset("blobs", str(tmp_path / "d"), rows=3000, columns=5, partitions=3)
    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 1, "warmup": 0,
                       "workloads": [{"name": "pca", "params": {"n_components": 2}},
                                     {"name": "pca", "params": {"n_components": 9}}],
                       "dataset": {"name": "parquet", "uri": str(tmp_path / "d")}})
    ok, bad = run_benchmark(spec, str(tmp_path / "out.jsonl")).records
    assert ok["state"] == "succeeded" and 0 < ok["quality"]["explained_variance"] <= 1
    assert ok["data"]["partitions"] == [0, 1, 2]
    assert ok["dataset"]["name"] == "parquet" and ok["dataset"]["samples"] == 3000
    assert bad["state"] == "failed"
    assert bad["error"] == ("workloads.pca.params.n_components: 9 is more than the dataset's "
                            "5 features")


def test_kmeans_on_a_partitioned_dataset_needs_lloyd(tmp_path):
    from bench.runner import run_benchmark

    make_dataset("blobs", str(tmp_path / "d"), rows=2000, columns=3, partitions=2, classes=3)
    spec = parse_spec({"frameworks": ["local"], "workers": [1], "baselines": False,
                       "repeats": 1, "warmup": 0,
                       "workloads": [{"name": "kmeans", "params": {"n_clusters": 3,
                                                                   "strategy": "lloyd"}},
                                     {"name": "kmeans"}],
                       "dataset": {"name": "parquet", "uri": str(tmp_path / "d")}})
    lloyd, inits = run_benchmark(spec, str(tmp_path / "out.jsonl")).records
    assert lloyd["state"] == "succeeded" and lloyd["data"]["partitions"] == [0, 1]
    assert inits["error"] == ("workloads.kmeans.params.strategy: a partitioned dataset needs "
                              "strategy: lloyd (the data-parallel form)")


def test_a_relative_local_uri_opens_as_an_absolute_path(tmp_path, monkeypatch):
    """Workers read the partitions themselves, from their own working directories (a Ray worker
    runs in its session folder): the partitions of a dataset named relatively are absolute."""
    make_dataset("blobs", str(tmp_path / "rel"), rows=40, columns=2, partitions=2, seed=0)
    monkeypatch.chdir(tmp_path)
    data = open_dataset("rel")
    assert data.uri == str(tmp_path / "rel")
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in data.partitions)


def test_knn_and_dataframe_partitioned_bad_input_is_one_line(tmp_path):
    """The partitioned knn and dataframe name the field at fault: the dataset's kind, a
    training split that leaves no queries, more neighbours than training rows."""
    from bench.workloads import get_workload

    make_dataset("blobs", str(tmp_path / "b"), rows=60, columns=2, partitions=3)
    make_dataset("transactions", str(tmp_path / "t"), rows=60, partitions=2)
    blobs, tx = open_dataset(str(tmp_path / "b")), open_dataset(str(tmp_path / "t"))
    knn, df = get_workload("knn"), get_workload("dataframe")
    knn_params = {"n_neighbors": 5, "chunks_per_worker": 1, "train_partitions": 1}
    with make_engine("local", 1) as engine:
        cases = [
            (lambda: knn.distribute_partitioned(engine, tx, knn_params),
             (r"^workloads\.knn: needs numeric features and a label \(dataset kind "
              r"classification or blobs\); .* is transactions$")),
            (lambda: knn.distribute_partitioned(engine, blobs, knn_params | {
                "train_partitions": 3}),
             (r"^workloads\.knn\.params\.train_partitions: 3 leaves no query partition; "
              r"the dataset has 3 \(expected at most 2\)$")),
            (lambda: knn.distribute_partitioned(engine, blobs, knn_params | {
                "n_neighbors": 21}),
             (r"^workloads\.knn\.params\.n_neighbors: 21 is more than the 20 training "
              r"rows \(the first 1 partition\(s\)\)$")),
            (lambda: df.distribute_partitioned(engine, blobs, {}),
             (r"^dataset\.uri .*/b: dataframe needs a transactions dataset \(testbed data "
              r"make --kind transactions\); this one is blobs$")),
        ]
        for call, message in cases:
            with pytest.raises(UsageError, match=message):
                call()


def test_a_run_of_knn_and_dataframe_on_partitioned_datasets(tmp_path):
    """Through the runner on the baseline: each reads its own dataset's partitions (knn: the
    query partitions, its training partition in ``extra``) and records what it read."""
    from bench.runner import run_benchmark

    make_dataset("blobs", str(tmp_path / "b"), rows=900, columns=3, partitions=3, classes=3)
    make_dataset("transactions", str(tmp_path / "t"), rows=900, partitions=3, keys=40)
    common = {"frameworks": ["local"], "workers": [2], "baselines": False, "repeats": 1,
              "warmup": 0}
    knn = run_benchmark(parse_spec(common | {
        "workloads": [{"name": "knn"}], "dataset": {"name": "parquet",
                                                    "uri": str(tmp_path / "b")}}),
        str(tmp_path / "knn.jsonl")).records[0]
    blobs = open_dataset(str(tmp_path / "b"))
    assert knn["state"] == "succeeded" and knn["quality"]["accuracy"] > 0.9
    assert knn["data"]["partitions"] == [1, 2] and knn["data"]["reads"] == 2
    assert knn["extra"]["train_rows"] == 300 and knn["extra"]["query_rows"] == 600
    assert knn["data"]["bytes_read"] + knn["extra"]["train_bytes_read"] == \
        blobs.manifest["bytes"]
    df = run_benchmark(parse_spec(common | {
        "workloads": [{"name": "dataframe"}], "dataset": {"name": "parquet",
                                                          "uri": str(tmp_path / "t")}}),
        str(tmp_path / "df.jsonl")).records[0]
    assert df["state"] == "succeeded" and df["quality"]["sorted_rows"] == 900
    assert df["quality"]["groups"] == 40 and df["quality"]["sorted"] == 1
    assert df["data"]["partitions_by_worker"] == {"driver": [0, 1, 2]}


def test_dask_reads_one_file_per_task_only_under_the_testbeds_config(tmp_path):
    """Pins Dask's behaviour that etl works around: when a computation needs fewer columns
    than the files hold, Dask's tune pass fuses the reads of several files into one task
    (dask_expr FusedParquetIO), so a worker sized for one partition gets several. Under
    dask_one_task_per_file each file is its own read task."""
    from bench.data.readers import dask_dataframe, dask_one_task_per_file

    make_dataset("transactions", str(tmp_path), rows=8000, partitions=8)
    data = open_dataset(str(tmp_path))

    def read_tasks(collection):
        plan = collection.optimize(fuse=False).expr.walk()
        return [(type(e).__name__, e.npartitions) for e in plan if "Parquet" in type(e).__name__]

    total = dask_dataframe(data, ["customer", "amount", "quantity"])["amount"].sum()
    fused = read_tasks(total)
    # The day Dask stops fusing, this fails and the workaround can go.
    assert [name for name, _ in fused] == ["FusedParquetIO"] and fused[0][1] < 8
    with dask_one_task_per_file():
        assert read_tasks(total) == [("ReadParquetPyarrowFS", 8)]
        assert float(total.compute(scheduler="sync")) == pytest.approx(
            float(dask_dataframe(data, ["amount"])["amount"].sum().compute(scheduler="sync")))
