"""`testbed run` beside a user's own Ray and Dask clusters on their default ports.

The bystanders are real: `ray start --head` on 6379 (dashboard 8265, client server 10001) with
token auth from a `~/.ray/auth_token`, and a Dask scheduler on 8786 (dashboard 8787) with one
worker. The testbed must succeed beside them (fault injection included: Ray's state API looks
for "the" local cluster unless told which), must not stop, join or connect to them, and they
must be alive and unchanged afterwards.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench.engines.ray_auth import gcs_accepts as _gcs_accepts
from bench.engines.ray_launch import port_open as _open
from bench.results import read_records

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RAY_IP = "127.0.0.250"
PORTS = {"ray GCS": (RAY_IP, 6379), "ray dashboard": (RAY_IP, 8265),
         "ray client server": (RAY_IP, 10001), "dask scheduler": ("127.0.0.1", 8786),
         "dask dashboard": ("127.0.0.1", 8787)}


def _until(predicate, timeout: float, what: str, state=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, (
            f"timed out after {timeout}s waiting for {what}: {state()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def bystanders(tmp_path_factory):
    busy = [f"{n} {ip}:{p}" for n, (ip, p) in PORTS.items() if _open(ip, p)]
    if busy:
        pytest.skip(f"default ports already taken on this host, cannot start bystanders: {busy}")
    tmp = tmp_path_factory.mktemp("bystanders")
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    make_token = ("from ray._private.authentication.authentication_token_setup "
                  "import generate_and_save_token; generate_and_save_token()")
    subprocess.run([sys.executable, "-c", make_token], env=env, check=True, timeout=120)
    token = (home / ".ray" / "auth_token").read_text().strip()
    # Short: Ray's unix sockets live under it (107 bytes at most).
    ray_tmp = tempfile.mkdtemp(prefix="tb-by-", dir="/tmp")
    # Ray writes to its own copy of the log's descriptor; ours closes once it started.
    with open(tmp / "ray.log", "wb") as ray_log:
        ray_head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block",
                                     f"--node-ip-address={RAY_IP}", "--port=6379",
                                     "--include-dashboard=true", f"--dashboard-host={RAY_IP}",
                                     "--num-cpus=1", f"--memory={512 * 2**20}",
                                     f"--object-store-memory={100 * 2**20}",
                                     f"--temp-dir={ray_tmp}", "--disable-usage-stats"],
                                    env=env, stdout=ray_log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    procs = [
        ray_head,
        subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "8786",
                          "--dashboard-address", "127.0.0.1:8787", "--no-show"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
    ]
    try:
        _until(lambda: all(_open(ip, p) for ip, p in PORTS.values() if p != 8787), 120,
               "the bystanders' ports", lambda: [
                   f"{n}: {'open' if _open(ip, p) else 'closed'}" for n, (ip, p) in PORTS.items()]
               + [f"pid {p.pid}: {p.poll()}" for p in procs]
               + (tmp / "ray.log").read_text(errors="replace").splitlines()[-15:])
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", "tcp://127.0.0.1:8786", "--nthreads", "1",
             "--name", "bystander", "--local-directory", str(tmp / "dw"), "--no-nanny"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        yield {"env": env, "token": token, "procs": procs, "home": home}
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray_nodes(bystanders) -> str:
    """The bystander's nodes, asked the way its user would (token from ~/.ray)."""
    script = (f"import ray; ray.init(address='{RAY_IP}:6379', logging_level='ERROR'); "
              "print(sorted(n['NodeManagerAddress'] for n in ray.nodes()))")
    p = subprocess.run(
        [sys.executable, "-c", script], env={**bystanders["env"], "RAY_AUTH_MODE": "token"},
        capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip().splitlines()[-1]


def _dask_workers() -> list[str]:
    from distributed import Client

    with Client("tcp://127.0.0.1:8786", timeout=30) as c:
        return sorted(w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values())


def test_a_run_beside_the_users_own_clusters(tmp_path, bystanders):
    _until(lambda: _dask_workers() == ["bystander"], 60, "the bystander's Dask worker")
    ray_before = _ray_nodes(bystanders)
    assert ray_before == f"['{RAY_IP}']"
    pids = [p.pid for p in bystanders["procs"]]

    out = tmp_path / "r.jsonl"
    spec = tmp_path / "faults.yaml"
    # A faulted Ray run reads Ray's state API, which finds "the" local cluster unless told.
    spec.write_text("frameworks: [ray]\nworkers: [2]\nworkload: {name: knn}\nrepeats: 2\n"
                    "warmup: 1\nbaselines: false\nfaults: {killWorkers: 1, afterFraction: 0.4}\n")
    env = {**os.environ, "HOME": str(bystanders["home"])}
    for args in (["-f", "ray,dask,dask-on-ray", "-w", "1", "-l", "knn", "--repeats", "1",
                  "--no-baselines"], [str(spec)]):
        p = subprocess.run([str(BIN / "testbed"), "run", *args, "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    records = read_records(out)
    assert [(r["framework"], r["state"]) for r in records] == [
        ("ray", "succeeded"), ("dask", "succeeded"), ("dask-on-ray", "succeeded"),
        ("ray", "succeeded")]
    observed = records[-1]["faults"]["observed"]
    assert observed["observed"] is True, observed
    # None of ours used the bystanders' addresses.
    for r in records[:3]:
        address = str(r["environment"]["engine"].get("address") or "")
        assert ":6379" not in address and ":8786" not in address

    # The bystanders: the same processes, alive, with their own members only.
    assert all(p.poll() is None for p in bystanders["procs"]), pids
    assert _ray_nodes(bystanders) == ray_before
    assert _gcs_accepts(f"{RAY_IP}:6379", bystanders["token"])
    assert _dask_workers() == ["bystander"]
    assert all(_open(ip, port) for ip, port in PORTS.values() if port != 8787)


def _square(x: int) -> int:
    return x * x


def test_ray_calls_after_the_engine_stopped_never_reach_the_users_cluster(bystanders,
                                                                          monkeypatch):
    """Ray's API runs ``ray.init()`` by itself when called while disconnected
    (ray/_private/auto_init_hook.py), and a user's shell often names their own cluster in
    RAY_ADDRESS, with their token in ~/.ray. A call that outlives our cluster (an abandoned
    trial's clean-up) must fail saying Ray is not started, not join the user's cluster."""
    import ray

    from bench.engines import make_engine

    monkeypatch.setenv("RAY_ADDRESS", f"{RAY_IP}:6379")
    monkeypatch.setenv("HOME", str(bystanders["home"]))
    ray_before = _ray_nodes(bystanders)
    engine = make_engine("ray", 1)
    engine.start()
    try:
        assert engine.map(_square, [-1, 2]) == [1, 4]
    finally:
        engine.stop()
    with pytest.raises(ray.exceptions.RaySystemError, match="Ray has not been started yet"):
        ray.put(1)
    assert not ray.is_initialized()
    assert _ray_nodes(bystanders) == ray_before
