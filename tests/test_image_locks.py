"""The images' lock files and Dockerfiles, checked without a Docker engine: every pin of
pyproject.toml is in the lock with the same version, the operator's packages are a subset of
the runner's, both locks are what the tested .venv runs, and the Dockerfiles keep their
contract (base as a build argument, offline install, non-root, only /opt/venv copied)."""
from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images"))
import wheelhouse  # noqa: E402

RELOCK = "regenerate with `scripts/build-images.sh --relock` (or `.venv/bin/python images/wheelhouse.py lock`)"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("image", wheelhouse.IMAGES)
def test_lock_has_pyprojects_pins(image):
    lock = wheelhouse.read_lock(image)
    reqs = wheelhouse.requirements()[image]
    if image == "runner":
        reqs = _project()["dependencies"] + _project()["optional-dependencies"]["operator"]
    for text in reqs:
        req = Requirement(text)
        name = wheelhouse.norm(req.name)
        assert name in lock, f"{req.name} is missing from images/requirements-{image}.txt: {RELOCK}"
        assert req.specifier.contains(lock[name], prereleases=True), \
            f"{image} lock pins {name}=={lock[name]}, pyproject.toml wants {text}: {RELOCK}"


def test_operator_lock_is_a_subset_of_the_runners():
    runner, operator = wheelhouse.read_lock("runner"), wheelhouse.read_lock("operator")
    assert {n: runner.get(n) for n in operator} == operator
    heavy = {"ray", "torch", "dask", "distributed", "scikit-learn", "pandas", "pyarrow", "scipy"}
    assert not heavy & set(operator)


@pytest.mark.parametrize("image", wheelhouse.IMAGES)
def test_lock_matches_the_tested_environment(image):
    for name, version in wheelhouse.read_lock(image).items():
        installed = importlib.metadata.version(name)
        assert installed == version, \
            f"{image} lock pins {name}=={version}, the tested .venv has {installed}: {RELOCK}"


@pytest.mark.parametrize("image", wheelhouse.IMAGES)
def test_dockerfile_contract(image):
    text = (ROOT / "images" / f"{image}.Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (.+)$", text, re.M)
    assert froms == ["${BASE} AS build", "${BASE}"]
    final = text.split("\nFROM ${BASE}\n", 1)[1]
    # Only the venv reaches the final stage: no wheels, no installer, no pip cache.
    assert re.findall(r"^COPY .*$", final, re.M) == ["COPY --from=build /opt/venv /opt/venv"]
    assert "USER 1000:1000" in final and "PATH=/opt/venv/bin:" in final
    if image == "runner":
        assert "RAY_USAGE_STATS_ENABLED=0" in final and 'CMD ["testbed", "--help"]' in final
    else:
        assert 'ENTRYPOINT ["testbed-operator"]' in final
    installs = re.findall(r"pip --python /opt/venv/bin/python install ([^\n]*)", text)
    assert installs and all("--no-index" in i for i in installs)
    assert "--without-pip /opt/venv" in text
