"""The lock files, the wheel cache and one build context per image.

    python images/wheelhouse.py lock           regenerate every images/requirements-*.txt from
                                               pyproject.toml and the tested .venv
    python images/wheelhouse.py fetch LOCK...  every wheel pinned in these locks into the wheel
                                               cache (outside the clone); downloads only what
                                               the cache lacks
    python images/wheelhouse.py project        the project's own wheel, built from this tree
                                               into images/wheelhouse/project/
    python images/wheelhouse.py stage IMAGE    images/wheelhouse/IMAGE/: the build context of
                                               that image (requirements.txt, deps/, project/;
                                               for runner also requirements-torch.txt and
                                               deps-torch/, what the full lock adds to the slim
                                               one; for both runners check.sh), hard links
                                               into the cache
    python images/wheelhouse.py cache-dir      print the wheel cache's path

IMAGE is one of runner (with torch), runner-slim (without torch) or operator; LOCK is one of
those or venv. scripts/setup.sh (venv) and scripts/build-images.sh (the images) run these with
the project's .venv interpreter (Python 3.11 on Linux x86_64, the images' Python and platform).

The wheel cache is ``$TESTBED_WHEELHOUSE``, by default
``${XDG_CACHE_HOME:-~/.cache}/raydask-testbed/wheelhouse``: every clone on a machine shares it, so
only the first setup or build there downloads (pip's own HTTP cache cannot do that here: the
registry's answers carry no caching headers, so pip stores nothing). Only ``fetch`` (and
``lock``, which resolves against the index) use the network, and ``fetch`` only when the cache
lacks a pinned wheel; .venv and the Dockerfiles install with ``pip install --no-index``.

The locks, one source of truth for every version not pinned in pyproject.toml:

* venv: every package of the test environment (``pip install -e .[test]``), as the tested .venv
  has it. scripts/setup.sh installs with this file as pip constraints, so a fresh .venv gets
  exactly these versions.
* runner: the main dependencies plus the operator extra (the runner publishes results with the
  Kubernetes client), torch 2.13.0 included with the nvidia-*/triton wheels PyPI's build
  needs.
* runner-slim: the same without torch and what only torch needs (the cnn and resnet18
  workloads import torch; no other code does).
* operator: the operator extra plus what the operator's code imports from the main
  dependencies (bench.spec/params/results: pydantic, PyYAML, numpy; prometheus-client; boto3
  for the S3 copy of the results; python-dateutil, pinned for botocore). The project itself is
  installed with ``--no-deps`` in that image.

Each image lock is resolved with the venv lock as constraints: the images run the versions the
test suite ran.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from urllib.parse import urlparse
from urllib.request import url2pathname

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The build contexts and the project's wheel: in the clone (gitignored), hard links into the cache.
CONTEXTS = os.path.join(HERE, "wheelhouse")
PROJECT = "raydask-testbed"
IMAGES = ("runner", "runner-slim", "operator")
LOCKS = ("venv", *IMAGES)  # in this order: the image locks are resolved against the venv lock
TORCH = "torch"
# Main dependencies the operator needs at run time (the rest of its needs: the operator extra).
OPERATOR_RUNTIME = ("pydantic", "PyYAML", "numpy", "prometheus-client", "boto3", "python-dateutil")
# Wheels reproducible from the same sources: an unchanged project keeps Docker's layer cache.
EPOCH = "315532800"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return norm(re.split(r"[\s<>=!~;\[@]", req.strip(), maxsplit=1)[0])


def cache_dir() -> str:
    """The wheel cache shared by every clone on this machine."""
    if os.environ.get("TESTBED_WHEELHOUSE"):
        return os.path.abspath(os.environ["TESTBED_WHEELHOUSE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "raydask-testbed", "wheelhouse")


def lock_path(name: str) -> str:
    return os.path.join(HERE, f"requirements-{name}.txt")


def read_lock(name: str) -> dict[str, str]:
    """``{normalized name: version}`` of a lock file."""
    pins = {}
    with open(lock_path(name)) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if line:
                pkg, _, version = line.partition("==")
                pins[norm(pkg)] = version
    return pins


def requirements() -> dict[str, list[str]]:
    """What each lock resolves, as pip requirements."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    main = {requirement_name(r): r for r in project["dependencies"]}
    missing = [n for n in (*OPERATOR_RUNTIME, TORCH) if norm(n) not in main]
    if missing:
        sys.exit(f"wheelhouse.py: {missing} are not main dependencies in pyproject.toml")
    extras = project["optional-dependencies"]
    runner = [*project["dependencies"], *extras["operator"], *extras["libraries"]]
    return {"venv": [f"{ROOT}[test]"],
            "runner": runner,
            "runner-slim": [r for r in runner if requirement_name(r) != TORCH],
            "operator": [*project["optional-dependencies"]["operator"],
                         *(main[norm(n)] for n in OPERATOR_RUNTIME)]}


def pip(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], **kw)


def dry_run(args: list[str], check: bool = True) -> list[dict] | None:
    """What ``pip install`` would install (its --report), installing nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        # --no-build-isolation: the project's metadata is prepared with this interpreter's
        # setuptools, no build environment to download.
        p = pip("install", "--quiet", "--dry-run", "--ignore-installed", "--no-build-isolation",
                "--report", report, *args, capture_output=not check, text=True)
        if p.returncode:
            if check:
                sys.exit(p.returncode)
            return None
        with open(report) as f:
            return json.load(f)["install"]


@contextlib.contextmanager
def _exclusive(directory: str):
    """One fetch at a time per cache (two clones may build at once)."""
    with open(os.path.join(directory, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rel(path: str) -> str:
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


# ---------------------------------------------------------------------------------- commands
HEADERS = {
    "venv": "Every package of the test environment (`pip install -e .[test]`), pinned.\n"
            "# scripts/setup.sh installs the .venv with this file as pip constraints.",
    "runner": "Every package of the runner image (`--variant full`, with torch), pinned.",
    "runner-slim": "Every package of the slim runner image (no torch), pinned.",
    "operator": "Every package of the operator image, pinned.",
}


def lock() -> None:
    # --all: setuptools too (torch requires it; its version must be the tested one).
    freeze = pip("freeze", "--all", "--exclude-editable", check=True, capture_output=True,
                 text=True).stdout
    tested = [line for line in freeze.splitlines()
              if line and not line.startswith("#") and requirement_name(line) != PROJECT]
    reqs = requirements()
    with tempfile.TemporaryDirectory() as tmp:
        constraints = os.path.join(tmp, "constraints.txt")
        with open(constraints, "w") as f:
            f.write("\n".join(tested) + "\n")
        for name in LOCKS:
            items = dry_run(["-c", constraints, *reqs[name]])
            pins = sorted({(i["metadata"]["name"], i["metadata"]["version"]) for i in items
                           if norm(i["metadata"]["name"]) != PROJECT}, key=lambda p: norm(p[0]))
            with open(lock_path(name), "w") as out:
                out.write(f"# {HEADERS[name]}\n# Generated by `images/wheelhouse.py lock` from "
                          f"pyproject.toml and the tested .venv: do not edit.\n")
                if name != "venv":
                    out.write(f"# {PROJECT} itself is added by the build.\n")
                out.writelines(f"{n}=={v}\n" for n, v in pins)
            print(f"{_rel(lock_path(name))}: {len(pins)} packages")
            if name == "venv":
                constraints = lock_path("venv")  # the images get a subset of the tested stack


def _cached(name: str) -> list[dict] | None:
    """The cache's wheel for every pin of a lock, or None if one is missing."""
    return dry_run(["--no-index", "--no-deps", "--find-links", cache_dir(), "-r", lock_path(name)],
                   check=False)


def fetch(names: list[str]) -> None:
    """Every wheel pinned in these locks into the cache, downloading only what it lacks."""
    for name in names:
        if name not in LOCKS:
            sys.exit(f"wheelhouse.py fetch: unknown lock {name!r}; expected some of {LOCKS}")
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    with _exclusive(cache):
        for name in names:
            if _cached(name) is None:  # something is missing: ask the registries (pip's config)
                print(f"fetching the wheels of {_rel(lock_path(name))} into {cache}/", flush=True)
                pip("wheel", "--quiet", "--no-deps", "--find-links", cache, "--wheel-dir", cache,
                    "-r", lock_path(name), check=True)
                if _cached(name) is None:
                    sys.exit(f"wheelhouse.py fetch: {cache} still lacks wheels pinned in "
                             f"{_rel(lock_path(name))}")


def project() -> None:
    """The project's own wheel, in images/wheelhouse/project/ (per clone: it is this tree's
    code)."""
    out = os.path.join(CONTEXTS, "project")
    shutil.rmtree(out, ignore_errors=True)
    # Built with the .venv's setuptools: no build-isolation download.
    pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", out, ROOT,
        check=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    shutil.rmtree(os.path.join(ROOT, "build"), ignore_errors=True)


def _link(src: str, dst_dir: str) -> None:
    dst = os.path.join(dst_dir, os.path.basename(src))
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)


def stage(image: str) -> None:
    if image not in IMAGES:
        sys.exit(f"wheelhouse.py stage: unknown image {image!r}; expected one of {IMAGES}")
    items = _cached(image)
    if items is None:
        sys.exit(f"wheelhouse.py stage: {cache_dir()} lacks wheels pinned in "
                 f"{_rel(lock_path(image))}: run `images/wheelhouse.py fetch {image}`")
    wheels = glob.glob(os.path.join(CONTEXTS, "project", "*.whl"))
    if len(wheels) != 1:
        sys.exit("wheelhouse.py stage: no project wheel: run `images/wheelhouse.py project`")
    context = os.path.join(CONTEXTS, image)
    shutil.rmtree(context, ignore_errors=True)
    # The full runner is slim's layers plus one of torch's (runner.Dockerfile): slim's packages
    # go to deps/ and requirements.txt, the same files as in the slim context (so that Docker's
    # cache serves both), and what the full lock adds to requirements-torch.txt and deps-torch/.
    base_lock = "runner-slim" if image == "runner" else image
    base = read_lock(base_lock)
    for sub in ("deps", "project", *(("deps-torch",) if image == "runner" else ())):
        os.makedirs(os.path.join(context, sub))
    for item in items:
        url = item["download_info"]["url"]
        assert url.startswith("file://"), url
        sub = "deps" if norm(item["metadata"]["name"]) in base else "deps-torch"
        _link(url2pathname(urlparse(url).path), os.path.join(context, sub))
    _link(wheels[0], os.path.join(context, "project"))
    shutil.copy(lock_path(base_lock), os.path.join(context, "requirements.txt"))
    if image == "runner":
        with open(lock_path("runner")) as f, \
                open(os.path.join(context, "requirements-torch.txt"), "w") as out:
            out.write("# What images/requirements-runner.txt adds to requirements-runner-slim.txt"
                      " (staged by images/wheelhouse.py).\n")
            out.writelines(line for line in f if not line.startswith("#")
                           and requirement_name(line) not in base)
    if image.startswith("runner"):
        shutil.copy(os.path.join(HERE, "runner-check.sh"), os.path.join(context, "check.sh"))
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(context, "*", "*.whl")))
    print(f"{_rel(context)}/: {len(items)} wheels + the project, {size / 2**20:.0f} MiB")


def main(argv: list[str]) -> None:
    if argv == ["lock"]:
        lock()
    elif argv[:1] == ["fetch"] and len(argv) >= 2:
        fetch(argv[1:])
    elif argv == ["project"]:
        project()
    elif argv[:1] == ["stage"] and len(argv) == 2:
        stage(argv[1])
    elif argv == ["cache-dir"]:
        print(cache_dir())
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
