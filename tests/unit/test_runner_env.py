"""The runner command reads what the operator sets on its pod (bench.kube.names) and hands it
to the engine: the engines never read Kubernetes' contract themselves."""
import json
import os
import subprocess
import sys

from bench.engines import make_engine
from bench.kube.names import STARTUP_TIMEOUT_ENV

from support import free_port


def _runner(tmp_path, timeout_env: str, spec: dict) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, STARTUP_TIMEOUT_ENV: timeout_env}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "runner", "--framework", "dask", "--workers", "1",
         "--address", f"tcp://127.0.0.1:{free_port()}", "--spec-json", json.dumps(spec),
         "--out", str(tmp_path / "r.jsonl")],
        capture_output=True, text=True, timeout=300, env=env)


def test_the_runner_waits_for_its_cluster_as_long_as_the_operator_says(tmp_path):
    # timeoutSeconds 600 would give a cluster at an address 120 s; the pod's variable says 3.
    p = _runner(tmp_path, "3", {"workload": {"name": "noop"}, "timeoutSeconds": 600})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "cannot connect to the Dask scheduler" in p.stderr
    assert "within 3 s" in p.stderr, p.stderr


def test_a_bad_startup_timeout_names_the_variable(tmp_path):
    for bad in ("abc", "0", "-5", "inf"):
        p = _runner(tmp_path, bad, {"workload": {"name": "noop"}})
        assert p.returncode == 2, (bad, p.stdout + p.stderr)
        assert f"${STARTUP_TIMEOUT_ENV}: expected a positive number of seconds, got {bad!r}" \
            in p.stderr, p.stderr
        assert "Traceback" not in p.stderr


def test_only_a_cluster_at_an_address_takes_the_connect_timeout():
    connected = make_engine("dask", 1, "tcp://127.0.0.1:1", startup_timeout=600,
                            connect_timeout=7.5)
    assert (connected.connect_timeout, connected.startup_timeout) == (7.5, 7.5)
    started = make_engine("dask", 1, None, startup_timeout=600, connect_timeout=7.5)
    assert (started.connect_timeout, started.startup_timeout) == (120.0, 600)
