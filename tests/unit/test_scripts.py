"""The shell scripts users run (README commands, CI) pass shellcheck."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob("images/*.sh"), ROOT / ".ci" / "run"])


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (Debian package 'shellcheck'; .ci/run "
                           "installs it)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script):
    p = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_kind_config_is_a_valid_cluster_with_workers_and_loopback_ports():
    import yaml

    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 2
    assert len({n["image"] for n in cfg["nodes"]}) == 1  # one pinned node image
    assert all(n["image"].startswith("kindest/node:v1.") for n in cfg["nodes"])
    for n in cfg["nodes"]:
        for m in n.get("extraPortMappings", []):
            assert m["listenAddress"] == "127.0.0.1"  # nothing published beyond loopback
    script = (ROOT / "scripts" / "kind-up.sh").read_text()
    assert "kind create cluster --config kind-config.yaml" in script
    assert "--name \"$CLUSTER\"" in script and f"CLUSTER={cfg['name']}" in script
