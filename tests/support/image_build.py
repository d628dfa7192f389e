"""The test images, built once per pytest session and shared by the tiers that run them.

``scripts/build-images.sh`` on the debootstrap base ``testbed-base:bookworm``
(scripts/provision-docker.sh makes it; no registry needed), tagged ``testbed-runner:TAG-slim``
(the slim runner, no torch), ``testbed-runner:TAG`` (the full runner: PyPI's torch with its
CUDA libraries, 6.5 GB, on the slim one's lower layers) and ``testbed-operator:TAG``. TAG is
``$TESTBED_TEST_IMAGE_TAG`` (default ``test``): two clones building on one Docker engine at once
give each its own tag.

The image tier runs the slim runner (its containers run KNN on digits) and checks the full one;
the cluster tier imports the full one, so that ``train`` runs through the operator too.
``TESTBED_TEST_RUNNER_VARIANT=slim`` builds and imports only the slim runner, for a faster loop
(the ``train`` test then skips and says so).

Used by tests/images/test_images.py (the images in Docker containers) and
tests/cluster/test_real_cluster.py (the same images imported into the real cluster): the
conftest's session fixture ``built_images`` builds them once when both run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = os.environ.get("TESTBED_TEST_BASE_IMAGE", "testbed-base:bookworm")
TAG = os.environ.get("TESTBED_TEST_IMAGE_TAG", "test")
VARIANT = os.environ.get("TESTBED_TEST_RUNNER_VARIANT", "full")
if VARIANT not in ("slim", "full"):
    raise ValueError(f"TESTBED_TEST_RUNNER_VARIANT={VARIANT!r}: expected 'slim' or 'full'")
SLIM = f"testbed-runner:{TAG}-slim"
FULL = f"testbed-runner:{TAG}"
RUNNER = SLIM if VARIANT == "slim" else FULL  # the runner the real cluster runs
OPERATOR = f"testbed-operator:{TAG}"


def engine_problem() -> str | None:
    """Why no Docker engine answers, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        p = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if p.returncode != 0 or not p.stdout.strip():
        return f"`docker info` failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    return None


def _base_present() -> bool:
    return subprocess.run(["docker", "image", "inspect", BASE], capture_output=True,
                          timeout=60).returncode == 0


def provision_problem() -> str | None:
    """Make sure an engine answers and the base image exists (as root, with
    scripts/provision-docker.sh, as CI does); returns why that is impossible, or None."""
    if engine_problem() is None and _base_present():
        return None
    if os.geteuid() != 0:
        return (f"no Docker engine or no base image {BASE} ({engine_problem() or 'base missing'}); "
                "scripts/provision-docker.sh (as root) provides both")
    p = subprocess.run([str(ROOT / "scripts" / "provision-docker.sh")], capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, f"provision-docker.sh failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return None


def build_images() -> dict[str, float]:
    """Build the slim runner, the operator and, for ``full``, the full runner (on slim's layers,
    images/runner.Dockerfile); returns the build's seconds (``build_seconds``)."""
    problem = provision_problem()
    if problem is not None:
        import pytest

        pytest.skip(problem)
    t0 = time.monotonic()
    variant = "both" if VARIANT == "full" else "slim"
    p = subprocess.run([str(ROOT / "scripts" / "build-images.sh"), "--variant", variant,
                        "--base", BASE, "--tag", TAG, "--quiet"],
                       capture_output=True, text=True, timeout=3000)
    assert p.returncode == 0, \
        f"build-images.sh --variant {variant} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    print(p.stdout)
    return {"build_seconds": time.monotonic() - t0}
