"""The operator's entry points as real processes against the emulator: the console script
and ``kopf run -m testbed_operator.main``, logging in through $KUBECONFIG."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from support.fake_controllers import FakeControllers
from support.k8s_emulator import serve_emulator, write_kubeconfig
from support.operator_harness import Api, benchmark, finished, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
NS = "ns1"


def test_bad_flags_are_usage_errors():
    p = subprocess.run([os.path.join(BIN, "testbed-operator"), "--max-concurrent-trials", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "--max-concurrent-trials: expected at least 1, got 0" in p.stderr
    p = subprocess.run([os.path.join(BIN, "testbed-operator")], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "TESTBED_METRICS_PORT": "lots"})
    assert (p.returncode != 0
            and "$TESTBED_METRICS_PORT: expected an integer, got 'lots'" in p.stderr)
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("how", ["console-script", "kopf-run"])
async def test_operator_process_reconciles_a_benchmark(tmp_path, how):
    async with serve_emulator(NS) as k8s:
        kubeconfig = str(write_kubeconfig(tmp_path / "kubeconfig", k8s.url, NS))
        metrics = free_port()
        env = {**os.environ, "KUBECONFIG": kubeconfig, "TESTBED_POLL_SECONDS": "0.2",
               "TESTBED_METRICS_PORT": str(metrics), "TESTBED_NAMESPACES": NS}
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        if how == "console-script":
            argv = [os.path.join(BIN, "testbed-operator"), "--liveness", liveness]
        else:
            argv = [os.path.join(BIN, "kopf"), "run", "--standalone", "--namespace", NS,
                    "--liveness", liveness, "-m", "testbed_operator.main"]
        # The operator writes to its own copy of the log's descriptor; ours closes at once.
        with open(tmp_path / "operator.log", "w") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        api = Api(k8s.url, NS)
        try:
            async with FakeControllers(k8s.url, NS, kubeconfig, fast=True):
                await api.apply(benchmark("cli", frameworks=["ray", "dask"], workers=[1]))
                obj = await finished(api, "cli", 60)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
                text = r.read().decode()
            assert 'testbed_trials{benchmark="cli",namespace="ns1",state="Succeeded"} 2.0' in text
            with urllib.request.urlopen(liveness, timeout=10) as r:
                assert r.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 60)  # the emulator must keep serving
            await api.close()
        assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]


def test_network_policy_settings_are_checked(monkeypatch):
    from testbed_operator.main import build_parser, config_from_env

    monkeypatch.setenv("TESTBED_NETWORK_POLICY", "maybe")
    with pytest.raises(SystemExit,
                       match=r"\$TESTBED_NETWORK_POLICY: expected true or false, got 'maybe'"):
        config_from_env()
    monkeypatch.setenv("TESTBED_NETWORK_POLICY", "True")
    monkeypatch.setenv("TESTBED_NETWORK_POLICY_METRICS_FROM", '{"podSelector": {}}')
    with pytest.raises(SystemExit, match=r"METRICS_FROM: expected a JSON list"):
        config_from_env()
    monkeypatch.setenv("TESTBED_NETWORK_POLICY_METRICS_FROM", '[{"podSelector": {}}]')
    config = config_from_env()
    assert config.network_policy and config.network_policy_metrics_from == [{"podSelector": {}}]
    args = build_parser().parse_args(["--no-network-policy"])
    assert (args.network_policy is False
            and args.network_policy_metrics_from == [{"podSelector": {}}])
    p = subprocess.run([os.path.join(BIN, "testbed-operator"),
                        "--network-policy-ray-dashboard-from", '[{"pod": {}}]'],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and 'item 0: expected an object with namespaceSelector' in p.stderr
