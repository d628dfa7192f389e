"""Partitioned datasets read by the workers of real local Ray and Dask clusters (two workers
each): every partition read once, by a worker process (never the driver), and the record's
``data`` field says which worker read what, how long it took and its peak RSS."""
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.data import data_record, make_dataset, open_dataset, read_partitions, spilled
from bench.data.readers import dask_dataframe, ray_dataset
from bench.engines import make_engine

pytestmark = pytest.mark.slow


def amount_sum(table: pa.Table) -> float:
    return float(pc.sum(table["amount"]).as_py())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("transactions"))
    make_dataset("transactions", uri, rows=6000, partitions=6, seed=3)
    return open_dataset(uri)


@pytest.fixture(scope="module", params=["ray", "dask"])
def engine(request):
    e = make_engine(request.param, 2, startup_timeout=180)
    e.start()
    yield e
    e.stop()


def test_workers_read_their_own_partitions(engine, dataset):
    read = read_partitions(engine, dataset, amount_sum, columns=["amount"])
    expected = [amount_sum(pq.read_table(p, columns=["amount"])) for p in dataset.partitions]
    assert read.results == pytest.approx(expected)
    assert all(r["pid"] != os.getpid() for r in read.reads)  # the driver read nothing
    rec = data_record(dataset, read.reads, spilled(engine))
    assert rec["partitions"] == list(range(6))
    by_worker = rec["partitions_by_worker"]
    assert set(by_worker) == set(engine.worker_names())  # both workers read, nothing else did
    assert sorted(p for ps in by_worker.values() for p in ps) == list(range(6))
    assert rec["bytes_read"] == dataset.total_bytes
    assert set(rec["read_seconds_by_worker"]) == set(rec["peak_rss_by_worker"]) == set(by_worker)
    assert all(s > 0 for s in rec["read_seconds_by_worker"].values())
    assert all(b > 20 * 2**20 for b in rec["peak_rss_by_worker"].values())
    key = f"{engine.framework}_spilled_bytes"
    assert rec["spilled"] == {key: 0}  # 6,000 rows spill nothing


def test_the_libraries_read_the_same_files(engine, dataset):
    if engine.framework == "ray":
        total = ray_dataset(dataset, columns=["amount"]).sum("amount")
    else:
        with engine.dask_context():
            total = dask_dataframe(dataset, columns=["amount"])["amount"].sum().compute()
    assert total == pytest.approx(sum(amount_sum(pq.read_table(p)) for p in dataset.partitions))
