"""Datasets from every source: digits, synthetic, real files, and S3 over HTTP (moto_server)."""
import socket

import numpy as np
import pandas as pd
import pytest

from bench.datasets import load_dataset
from bench.errors import RunError, UsageError
from bench.spec import DatasetSpec


def test_digits_ships_with_scikit_learn_and_splits_deterministically():
    a = load_dataset(DatasetSpec())
    b = load_dataset(DatasetSpec())
    assert a.X_train.shape == (1437, 64) and a.X_test.shape == (360, 64)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert a.meta["samples"] == 1797 and a.meta["classes"] == 10


def test_digits_scale_tiles_rows():
    d = load_dataset(DatasetSpec(scale=3))
    assert d.meta["samples"] == 3 * 1797
    # The copies are jittered, not duplicates.
    assert len(np.unique(d.X, axis=0)) > 2 * 1797


@pytest.mark.parametrize("kind", ["classification", "blobs"])
def test_synthetic_any_size_and_seeded(kind):
    spec = DatasetSpec(name="synthetic", samples=5000, features=20, classes=4, kind=kind, seed=7)
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.meta["samples"] == 5000 and a.X.shape[1] == 20 and a.meta["classes"] == 4
    assert np.array_equal(a.X, b.X)
    c = load_dataset(spec.model_copy(update={"seed": 8}))
    assert not np.array_equal(a.X, c.X)


def _frame(n=200):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    df["target"] = rng.integers(0, 3, n)
    return df


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npz"])
def test_files(tmp_path, fmt):
    df = _frame()
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        np.savez(path, X=df.drop(columns="target").to_numpy(), y=df["target"].to_numpy())
    d = load_dataset(DatasetSpec(name="file", path=str(path)))
    assert d.meta["samples"] == 200 and d.meta["features"] == 5
    assert np.allclose(np.sort(d.X[:, 0]), np.sort(df["f0"].to_numpy()))


def test_file_errors_name_the_problem(tmp_path):
    with pytest.raises(UsageError, match=r"dataset\.path: file .*missing\.csv.* does not exist"):
        load_dataset(DatasetSpec(name="file", path=str(tmp_path / "missing.csv")))
    _frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UsageError, match=r"dataset\.target: column 'label' not in"):
        load_dataset(DatasetSpec(name="file", path=str(tmp_path / "d.csv"), target="label"))
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(UsageError, match="cannot tell the format"):
        load_dataset(DatasetSpec(name="file", path=str(tmp_path / "d.txt")))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UsageError, match="cannot be read as parquet"):
        load_dataset(DatasetSpec(name="file", path=str(tmp_path / "broken.parquet")))
    np.savez(tmp_path / "wrong.npz", a=np.zeros(3))
    with pytest.raises(UsageError, match="needs arrays 'X' and 'y'"):
        load_dataset(DatasetSpec(name="file", path=str(tmp_path / "wrong.npz")))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 endpoint over HTTP on loopback (moto's server), with a bucket of objects."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        mp.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    d = tmp_path_factory.mktemp("s3")
    _frame().to_csv(d / "d.csv", index=False)
    client.upload_file(str(d / "d.csv"), "data", "tables/d.csv")
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    np.savez(d / "digits.npz", X=X, y=y)
    client.upload_file(str(d / "digits.npz"), "data", "digits.npz")
    yield endpoint
    server.stop()
    mp.undo()


def test_s3_objects_over_http(s3):
    d = load_dataset(DatasetSpec(name="s3", uri="s3://data/tables/d.csv", endpoint_url=s3))
    assert d.meta["samples"] == 200 and d.meta["uri"] == "s3://data/tables/d.csv"
    digits = load_dataset(DatasetSpec(name="s3", uri="s3://data/digits.npz", endpoint_url=s3))
    local = load_dataset(DatasetSpec())
    assert np.array_equal(digits.X_train, local.X_train)


def test_s3_errors_name_the_uri(s3):
    with pytest.raises(UsageError, match=r"s3://nope/x.csv: bucket 'nope' does not exist"):
        load_dataset(DatasetSpec(name="s3", uri="s3://nope/x.csv", endpoint_url=s3))
    with pytest.raises(UsageError,
                       match=r"s3://data/missing.csv: object 'missing.csv' does not exist"):
        load_dataset(DatasetSpec(name="s3", uri="s3://data/missing.csv", endpoint_url=s3))


def test_s3_wrong_credentials_are_named(tmp_path):
    """moto_server with authentication enforced (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys
    are refused the way AWS refuses them."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        mp = pytest.MonkeyPatch()
        mp.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        try:
            with pytest.raises(UsageError, match=r"dataset.uri s3://data/digits.npz: access denied "
                                                 r"\(InvalidAccessKeyId\); check credentials"):
                load_dataset(DatasetSpec(name="s3", uri="s3://data/digits.npz",
                                         endpoint_url=f"http://127.0.0.1:{port}"))
        finally:
            mp.undo()
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_slow_endpoint_times_out_naming_the_uri():
    """An endpoint that accepts connections and never answers."""
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def accept():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    t0 = time.monotonic()
    try:
        with pytest.raises(RunError, match=r"dataset.uri s3://data/x.csv: S3 endpoint "
                                           rf"http://127.0.0.1:{port} did not answer within 0.5 s"):
            load_dataset(DatasetSpec(name="s3", uri="s3://data/x.csv", io_timeout_seconds=0.5,
                                     endpoint_url=f"http://127.0.0.1:{port}"))
        assert time.monotonic() - t0 < 20
    finally:
        server.close()
        for c in held:
            c.close()
