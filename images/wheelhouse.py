"""The images' wheelhouse: lock files, wheels fetched on the host, one build context per image.

    python images/wheelhouse.py lock          regenerate images/requirements-{runner,operator}.txt
    python images/wheelhouse.py fetch         every pinned wheel into images/wheelhouse/cache/,
                                              plus the project's own wheel (cache/project/)
    python images/wheelhouse.py stage IMAGE   images/wheelhouse/IMAGE/: the build context of
                                              images/IMAGE.Dockerfile (requirements.txt, deps/,
                                              project/), hard links into the cache

scripts/build-images.sh runs these with the project's .venv interpreter (Python 3.11, the
images' Python). Only ``fetch`` may use the network, and only if the cache lacks a pinned
wheel: a wheelhouse made once (or copied in) builds both images with no registry access, since
the Dockerfiles install with ``pip install --no-index``.

Lock files: the direct pins come from pyproject.toml; the transitive versions are those of the
tested environment (this interpreter's ``pip freeze``, used as constraints), so the images run
the stack the test suite ran.

* runner: ``raydask-testbed[operator]`` (the runner publishes results with the Kubernetes client).
* operator: the operator extra plus what the operator's code imports from the main dependencies
  (bench.spec/params/results: pydantic, PyYAML, numpy; prometheus-client; boto3 for the S3 copy
  of the results; python-dateutil, pinned for botocore). The project itself is installed with
  ``--no-deps`` in that image.
"""
from __future__ import annotations

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
WHEELHOUSE = os.path.join(HERE, "wheelhouse")
CACHE = os.path.join(WHEELHOUSE, "cache")
PROJECT = "raydask-testbed"
IMAGES = ("runner", "operator")
# Main dependencies the operator needs at run time (the rest of its needs: the operator extra).
OPERATOR_RUNTIME = ("pydantic", "PyYAML", "numpy", "prometheus-client", "boto3", "python-dateutil")
# Wheels reproducible from the same sources: an unchanged project keeps Docker's layer cache.
EPOCH = "315532800"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return norm(re.split(r"[\s<>=!~;\[@]", req.strip(), maxsplit=1)[0])


def lock_path(image: str) -> str:
    return os.path.join(HERE, f"requirements-{image}.txt")


def read_lock(image: str) -> dict[str, str]:
    """``{normalized name: version}`` of an image's lock file."""
    pins = {}
    with open(lock_path(image)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[norm(name)] = version
    return pins


def requirements() -> dict[str, list[str]]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    main = {requirement_name(r): r for r in project["dependencies"]}
    missing = [n for n in OPERATOR_RUNTIME if norm(n) not in main]
    if missing:
        sys.exit(f"wheelhouse.py: {missing} are not main dependencies in pyproject.toml")
    return {"runner": [f"{ROOT}[operator]"],
            "operator": [*project["optional-dependencies"]["operator"],
                         *(main[norm(n)] for n in OPERATOR_RUNTIME)]}


def pip(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], **kw)


def dry_run(args: list[str], check: bool = True) -> list[dict] | None:
    """What ``pip install`` would install (its --report), installing nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        p = pip("install", "--quiet", "--dry-run", "--ignore-installed", "--report", report, *args,
                capture_output=not check, text=True)
        if p.returncode:
            if check:
                sys.exit(p.returncode)
            return None
        with open(report) as f:
            return json.load(f)["install"]


# ---------------------------------------------------------------------------------- commands
def lock() -> None:
    freeze = pip("freeze", "--exclude-editable", check=True, capture_output=True, text=True).stdout
    tested = [line for line in freeze.splitlines()
              if line and not line.startswith("#") and requirement_name(line) != PROJECT]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = os.path.join(tmp, "constraints.txt")
        with open(constraints, "w") as f:
            f.write("\n".join(tested) + "\n")
        for image, reqs in requirements().items():
            items = dry_run(["-c", constraints, *reqs])
            pins = sorted({(i["metadata"]["name"], i["metadata"]["version"]) for i in items
                           if norm(i["metadata"]["name"]) != PROJECT}, key=lambda p: norm(p[0]))
            with open(lock_path(image), "w") as out:
                out.write(f"# Every package of the {image} image, pinned. Generated by "
                          f"`images/wheelhouse.py lock`\n# from pyproject.toml and the tested "
                          f".venv: do not edit. {PROJECT} itself is added by the build.\n")
                out.writelines(f"{n}=={v}\n" for n, v in pins)
            print(f"{os.path.relpath(lock_path(image), ROOT)}: {len(pins)} packages")


def _cached(image: str) -> list[dict] | None:
    return dry_run(["--no-index", "--no-deps", "--find-links", CACHE, "-r", lock_path(image)],
                   check=False)


def fetch() -> None:
    os.makedirs(CACHE, exist_ok=True)
    for image in IMAGES:
        if _cached(image) is None:  # something is missing: ask the registries (pip's config)
            print(f"fetching the {image} image's wheels into {os.path.relpath(CACHE, ROOT)}/",
                  flush=True)
            pip("wheel", "--quiet", "--no-deps", "--wheel-dir", CACHE, "-r", lock_path(image),
                check=True)
    project = os.path.join(CACHE, "project")
    shutil.rmtree(project, ignore_errors=True)
    # Built with the .venv's setuptools: no build-isolation download.
    pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", project, ROOT,
        check=True, env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    shutil.rmtree(os.path.join(ROOT, "build"), ignore_errors=True)


def _link(src: str, dst_dir: str) -> None:
    dst = os.path.join(dst_dir, os.path.basename(src))
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage(image: str) -> None:
    if image not in IMAGES:
        sys.exit(f"wheelhouse.py stage: unknown image {image!r}; expected one of {IMAGES}")
    items = _cached(image)
    if items is None:
        sys.exit(f"wheelhouse.py stage: {os.path.relpath(CACHE, ROOT)} lacks wheels pinned in "
                 f"{os.path.relpath(lock_path(image), ROOT)}: run `images/wheelhouse.py fetch`")
    wheels = glob.glob(os.path.join(CACHE, "project", "*.whl"))
    if len(wheels) != 1:
        sys.exit("wheelhouse.py stage: no project wheel in the cache: run `images/wheelhouse.py fetch`")
    context = os.path.join(WHEELHOUSE, image)
    shutil.rmtree(context, ignore_errors=True)
    for sub in ("deps", "project"):
        os.makedirs(os.path.join(context, sub))
    for item in items:
        url = item["download_info"]["url"]
        assert url.startswith("file://"), url
        _link(url2pathname(urlparse(url).path), os.path.join(context, "deps"))
    _link(wheels[0], os.path.join(context, "project"))
    shutil.copy(lock_path(image), os.path.join(context, "requirements.txt"))
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(context, "*", "*.whl")))
    print(f"{os.path.relpath(context, ROOT)}/: {len(items)} wheels + the project, "
          f"{size / 2**20:.0f} MiB")


def main(argv: list[str]) -> None:
    if argv[:1] == ["lock"] and len(argv) == 1:
        lock()
    elif argv[:1] == ["fetch"] and len(argv) == 1:
        fetch()
    elif argv[:1] == ["stage"] and len(argv) == 2:
        stage(argv[1])
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
