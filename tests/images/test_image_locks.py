"""The lock files, the wheel cache and the Dockerfiles, checked without a Docker engine.

* Every pin of pyproject.toml is in the locks that need it, with the same version; torch is
  PyPI's exact 2.13.0 in the venv and full runner locks and absent from the slim runner's.
* The locks nest (operator in slim runner in full runner in venv) and each is closed and
  minimal: walking the installed packages' requirements from the lock's roots reaches exactly
  the lock, every version satisfying every requirement. So the full runner's lock resolves with
  `pip install --no-index` from its own pins, though CI never builds that image.
* Every lock is what the tested .venv runs, and scripts/setup.sh installs with the venv lock.
* The wheel cache lives outside the clone; the Dockerfiles keep their contract (base as a build
  argument, offline install, non-root, only installed packages copied, the testbed last, torch
  only in the full variant's stages).
"""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images"))
import wheelhouse  # noqa: E402

RELOCK = ("regenerate with `scripts/setup.sh --relock` (or, from the current .venv, "
          "`.venv/bin/python images/wheelhouse.py lock`)")
TORCH_ONLY = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _roots(name: str) -> list[Requirement]:
    """What a lock resolves: the project's own requirements for the venv lock."""
    if name == "venv":
        return [Requirement(f"{wheelhouse.PROJECT}[test]")]
    return [Requirement(r) for r in wheelhouse.requirements()[name]]


@pytest.mark.parametrize("name", wheelhouse.LOCKS)
def test_lock_has_pyprojects_pins(name):
    lock = wheelhouse.read_lock(name)
    project = _project()
    reqs = [*project["dependencies"], *project["optional-dependencies"]["operator"]]
    if name == "venv":
        reqs += [r for r in project["optional-dependencies"]["test"]
                 if wheelhouse.requirement_name(r) != wheelhouse.PROJECT]
    elif name == "runner-slim":
        reqs = [r for r in reqs if wheelhouse.requirement_name(r) != "torch"]
    elif name == "operator":
        reqs = wheelhouse.requirements()["operator"]
    for text in reqs:
        req = Requirement(text)
        pkg = wheelhouse.norm(req.name)
        assert pkg in lock, f"{req.name} is missing from images/requirements-{name}.txt: {RELOCK}"
        assert req.specifier.contains(lock[pkg], prereleases=True), \
            f"{name} lock pins {pkg}=={lock[pkg]}, pyproject.toml wants {text}: {RELOCK}"


def test_torch_is_pypis_exact_build_and_only_where_needed():
    project = {wheelhouse.requirement_name(r): r for r in _project()["dependencies"]}
    assert project["torch"] == "torch==2.13.0"  # exact: no range may pull another torch
    for name in wheelhouse.LOCKS:
        lock = wheelhouse.read_lock(name)
        # PyPI serves no local versions (+cpu, +cu130): a pin with one cannot be installed.
        assert not [f"{p}=={v}" for p, v in lock.items() if "+" in v], name
        torchy = sorted(p for p in lock if TORCH_ONLY.match(p))
        if name in ("venv", "runner"):
            assert lock["torch"] == "2.13.0" and "triton" in torchy, (name, torchy)
        else:
            assert torchy == [], f"the {name} image would carry {torchy}"


def test_locks_nest():
    locks = {n: wheelhouse.read_lock(n) for n in wheelhouse.LOCKS}
    for small, big in (("operator", "runner-slim"), ("runner-slim", "runner"), ("runner", "venv")):
        assert {p: locks[big].get(p) for p in locks[small]} == locks[small], (small, big)
    heavy = {"ray", "torch", "dask", "distributed", "scikit-learn", "pandas", "pyarrow", "scipy"}
    assert not heavy & set(locks["operator"])


def _walk(roots: list[Requirement], lock: dict[str, str]) -> tuple[set[str], list[str]]:
    """The packages reached from ``roots`` through the installed packages' requirements (markers
    evaluated for this interpreter and platform, the images' own), and every requirement the
    lock does not satisfy."""
    reached: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    problems: list[str] = []
    todo = [(wheelhouse.norm(r.name), frozenset(r.extras)) for r in roots]
    for r in roots:
        if wheelhouse.norm(r.name) != wheelhouse.PROJECT and (
                wheelhouse.norm(r.name) not in lock or not r.specifier.contains(
                    lock[wheelhouse.norm(r.name)], prereleases=True)):
            problems.append(f"root {r}: lock has {lock.get(wheelhouse.norm(r.name))}")
    while todo:
        pkg, extras = todo.pop()
        if (pkg, extras) in seen:
            continue
        seen.add((pkg, extras))
        if pkg != wheelhouse.PROJECT:
            reached.add(pkg)
        for text in importlib.metadata.requires(pkg) or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e})
                                      for e in ("", *sorted(extras))):
                continue
            dep = wheelhouse.norm(req.name)
            if dep != wheelhouse.PROJECT:
                if dep not in lock:
                    problems.append(f"{pkg} requires {text}: not in the lock")
                    continue
                if not req.specifier.contains(lock[dep], prereleases=True):
                    problems.append(f"{pkg} requires {text}: the lock pins {lock[dep]}")
            todo.append((dep, frozenset(req.extras)))
    return reached, problems


@pytest.mark.parametrize("name", wheelhouse.LOCKS)
def test_lock_is_closed_and_minimal(name):
    lock = wheelhouse.read_lock(name)
    reached, problems = _walk(_roots(name), lock)
    assert not problems, f"images/requirements-{name}.txt: {problems}: {RELOCK}"
    assert set(lock) - reached == set(), \
        f"images/requirements-{name}.txt pins what nothing requires: {RELOCK}"


@pytest.mark.parametrize("name", wheelhouse.LOCKS)
def test_lock_matches_the_tested_environment(name):
    for pkg, version in wheelhouse.read_lock(name).items():
        installed = importlib.metadata.version(pkg)
        assert installed == version, \
            f"{name} lock pins {pkg}=={version}, the tested .venv has {installed}: {RELOCK}"


def test_setup_installs_the_venv_lock_from_the_cache():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    install = re.search(r'"\$VPY" -m pip install --quiet --disable-pip-version-check --no-index'
                        r'(.*?)-e "\.\[test\]"', text, re.S)
    assert install, "setup.sh must install the .venv offline from the wheel cache"
    assert "-c images/requirements-venv.txt" in install.group(1)
    assert "wheelhouse.py cache-dir" in install.group(1)
    assert text.index("wheelhouse.py fetch venv") < install.start()


def test_wheel_cache_is_outside_the_clone(monkeypatch, tmp_path):
    monkeypatch.delenv("TESTBED_WHEELHOUSE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert wheelhouse.cache_dir() == str(tmp_path / "home/.cache/raydask-testbed/wheelhouse")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert wheelhouse.cache_dir() == str(tmp_path / "xdg/raydask-testbed/wheelhouse")
    monkeypatch.setenv("TESTBED_WHEELHOUSE", str(tmp_path / "mine"))
    assert wheelhouse.cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("TESTBED_WHEELHOUSE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(ROOT.parent))
    assert not Path(wheelhouse.cache_dir()).is_relative_to(ROOT)
    # The build contexts stay in the clone, gitignored.
    ignored = subprocess.run(["git", "check-ignore", "-q",
                              "images/wheelhouse/runner-slim/deps/x.whl"],
                             cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0


def test_build_images_rejects_an_unknown_variant():
    p = subprocess.run([str(ROOT / "scripts" / "build-images.sh"), "--variant", "tiny"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--variant must be full or slim" in p.stderr, p.stderr


STAGES = {
    # slim's stages all come before torch's: `docker build --target slim` with the classic builder
    # builds every stage up to the target, and the slim context has no torch wheels.
    "runner": ["${BASE} AS deps", "deps AS project-slim", "${BASE} AS runtime", "runtime AS slim",
               "deps AS torch", "torch AS project-full", "runtime AS full"],
    "operator": ["${BASE} AS deps", "deps AS project", "${BASE}"],
}
# What the images themselves are made of (a stage holding the installer or wheels never is one).
FINAL = {"runner": ("runtime", "slim", "full"), "operator": ("",)}


def _stages(text: str) -> dict[str, str]:
    """``{stage name ('' for an unnamed one): its instructions}`` (comments left out)."""
    parts = re.split(r"^FROM (.+)$", re.sub(r"^#.*\n", "", text, flags=re.M), flags=re.M)
    return {head.split(" AS ")[1] if " AS " in head else "": body
            for head, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.mark.parametrize("image", ["runner", "operator"])
def test_dockerfile_contract(image):
    text = (ROOT / "images" / f"{image}.Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    assert re.findall(r"^FROM (.+)$", text, re.M) == STAGES[image]
    stages = _stages(text)
    # The images get only installed packages: copied from the build stages into /opt/venv (the
    # packages, then the testbed on top: a code change rebuilds only that small layer). No wheels,
    # no installer, no pip cache.
    copies = [c for name in FINAL[image] for c in re.findall(r"^COPY .*$", stages[name], re.M)]
    assert copies and all(re.fullmatch(r"COPY --from=[\w-]+ /opt/\w+/? /opt/venv/?", c)
                          for c in copies), copies
    assert [c for c in copies if "project" in c] == [
        c for name in FINAL[image] for c in re.findall(r"^COPY .*$", stages[name], re.M)[-1:]
        if name != "runtime"], "the testbed's own layer must come last"
    final = "".join(stages[name] for name in FINAL[image])
    assert "USER 1000:1000" in final and "PATH=/opt/venv/bin:" in final
    installs = re.findall(r"pip --python /opt/venv/bin/python install ([^\n]*)", text)
    assert installs and all("--no-index" in i for i in installs)
    assert "--without-pip /opt/venv" in text
    # The pinned packages are consistent among themselves before the project is added.
    assert re.search(r"-r /wheels/requirements\.txt \\\n \&\& /opt/pip/bin/pip --python "
                     r"/opt/venv/bin/python check\n", stages["deps"])
    if image == "runner":
        assert "RAY_USAGE_STATS_ENABLED=0" in final and 'CMD ["testbed", "--help"]' in final
        for variant in ("slim", "full"):
            assert f"LABEL org.raydask-testbed.variant={variant}" in stages[variant]
            assert f"sh /wheels/check.sh {variant}" in stages[f"project-{variant}"]
        # torch only in the full variant's own stages, its packages from their own list.
        assert "torch" not in "".join(stages[s] for s in ("deps", "project-slim", "slim"))
        assert "-r /wheels/requirements-torch.txt" in stages["torch"]
    else:
        assert 'ENTRYPOINT ["testbed-operator"]' in final
