"""Ray token authentication is decided by the testbed, never by what is in ``~/.ray``.

Ray 2.60's ``ray start --head`` turns token auth on whenever ``~/.ray/auth_token`` exists, while
``ray.init(address=...)`` never does
(``ray/_private/authentication/authentication_token_setup.py``): on a machine where the user
once ran ``ray.init()`` every trial used to fail. These tests run real clusters under a temporary
``HOME``: without ``~/.ray``, with a token file made the way ``ray.init()`` makes it, and with
auth turned off; and they check that one cluster's token is refused by another cluster and that
a connecting runner without a token gets one clear line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.engines.ray_auth import gcs_accepts as _gcs_accepts
from bench.engines.ray_engine import RayEngine
from bench.results import read_records

pytestmark = pytest.mark.slow

TESTBED = str(Path(sys.executable).parent / "testbed")
# The user's own Ray settings must not reach the runs under test.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}


def _run(tmp_path: Path, home: Path, *extra: str) -> list[dict]:
    out = tmp_path / "results.jsonl"
    # Two workers: the head and a worker node joining it, each with the run's token.
    p = subprocess.run([TESTBED, "run", "-f", "ray,dask-on-ray", "-w", "2", "-l", "knn",
                        "--repeats", "1", "--warmup", "0", "--no-baselines", "--out", str(out),
                        *extra],
                       env={**CLEAN_ENV, "HOME": str(home)}, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    records = read_records(out)
    assert [(r["framework"], r["workers"], r["state"]) for r in records] == [
        ("ray", 2, "succeeded"), ("dask-on-ray", 2, "succeeded")]
    return records


def _modes(records: list[dict]) -> set[str]:
    return {r["environment"]["engine"]["settings"]["auth_mode"] for r in records}


def test_no_ray_dir_token_auth_and_home_left_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert _modes(_run(tmp_path, home)) == {"token"}
    assert not (home / ".ray").exists(), "the engine never writes ~/.ray"


def test_a_users_token_file_is_neither_used_nor_changed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # Made the way ray.init() makes it on a user's machine.
    make_token = ("from ray._private.authentication.authentication_token_setup "
                  "import generate_and_save_token; generate_and_save_token()")
    subprocess.run([sys.executable, "-c", make_token],
                   env={**CLEAN_ENV, "HOME": str(home)}, check=True, timeout=120)
    token_file = home / ".ray" / "auth_token"
    before = token_file.read_text()
    assert len(before) >= 32
    records = _run(tmp_path, home)
    assert _modes(records) == {"token"}
    assert token_file.read_text() == before
    assert before not in json.dumps(records), "no token reaches the results"


def test_token_auth_turned_off(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("f" * 32)  # would turn auth on by itself
    spec = tmp_path / "spec.yaml"
    spec.write_text("ray: {authMode: disabled}\n")
    assert _modes(_run(tmp_path, home, str(spec))) == {"disabled"}


@pytest.fixture(scope="module")
def two_clusters():
    a, b = RayEngine(1), RayEngine(1)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_one_clusters_token_is_refused_by_another(two_clusters):
    a, b = two_clusters
    token_a, token_b = (Path(e._token_path).read_text() for e in (a, b))
    assert token_a != token_b
    assert _gcs_accepts(b._gcs_address, token_b)
    assert not _gcs_accepts(b._gcs_address, token_a)
    assert not _gcs_accepts(b._gcs_address, None)
    assert _gcs_accepts(a._gcs_address, token_a)


@pytest.mark.parametrize(("token", "code", "message"), [
    (None, 1, "requires token authentication and no token was given: set RAY_AUTH_TOKEN"),
    ("other", 1, "rejected the authentication token"),
    ("own", 0, None),
])
def test_the_runner_takes_the_token_from_the_environment(tmp_path, two_clusters, token, code,
                                                          message):
    a, b = two_clusters
    env = {**CLEAN_ENV, "HOME": str(tmp_path)}
    if token:
        env["RAY_AUTH_TOKEN"] = Path((a if token == "other" else b)._token_path).read_text()
    spec = tmp_path / "spec.yaml"
    spec.write_text("workload: {name: knn}\nrepeats: 1\nwarmup: 0\n")
    p = subprocess.run([TESTBED, "runner", "--framework", "ray", "--workers", "1",
                        "--address", b._gcs_address, "--spec", str(spec),
                        "--out", str(tmp_path / "r.jsonl")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == code, p.stderr[-2000:]
    if message:
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("testbed: error:") and message in last, p.stderr[-2000:]
        assert "InvalidAuthToken" not in p.stderr, "no stream of retries before the error"
    else:
        assert read_records(tmp_path / "r.jsonl")[0]["environment"]["engine"]["settings"][
            "auth_mode"] == "token"
