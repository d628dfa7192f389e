#!/usr/bin/env bash
# Build the runner and operator images (images/*.Dockerfile) and print their sizes.
#
#   scripts/build-images.sh [--variant full|slim|both] [--base IMAGE] [--tag TAG] [--relock] [--quiet]
#
#   --variant V   the runner image's variant: full (default: torch from PyPI, the CUDA build with
#                 its nvidia-* wheels, several GB; every workload) tagged testbed-runner:TAG, or
#                 slim (no torch: every workload but cnn, resnet18 and train) tagged
#                 testbed-runner:TAG-slim, or both (one staging, one operator build). Both are
#                 targets of images/runner.Dockerfile and share its lower layers: building one
#                 after the other adds only the other's layers.
#   --base IMAGE  base of both images (default python:3.11-slim; testbed-base:bookworm is the
#                 debootstrap base made by scripts/provision-docker.sh, no registry needed)
#   --tag TAG     tags testbed-runner:TAG[-slim] and testbed-operator:TAG (default 0.1.0, the chart's)
#   --relock      regenerate images/requirements-*.txt from pyproject.toml and the .venv first
#   --quiet       only the steps' summaries, not docker's build output
#
# The wheels come from a cache outside the clone, shared by every clone on this machine:
# $TESTBED_WHEELHOUSE, by default ${XDG_CACHE_HOME:-~/.cache}/raydask-testbed/wheelhouse. pip
# downloads into it only the wheels pinned in images/requirements-*.txt that it lacks. The
# project's own wheel is built from this tree. Each image's build context is its own staged
# folder, hard links into the cache (images/wheelhouse/runner|runner-slim|operator/, gitignored:
# requirements.txt, deps/, project/), and the Dockerfiles install with `pip install --no-index`:
# the build containers need no registry access.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=python:3.11-slim
TAG=0.1.0
VARIANT=full
RELOCK=""
QUIET=""

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=${2:?--variant needs full or slim}; shift 2 ;;
    --variant=*) VARIANT=${1#*=}; shift ;;
    --base) BASE=${2:?--base needs an image}; shift 2 ;;
    --base=*) BASE=${1#*=}; shift ;;
    --tag) TAG=${2:?--tag needs a tag}; shift 2 ;;
    --tag=*) TAG=${1#*=}; shift ;;
    --relock) RELOCK=1; shift ;;
    --quiet|-q) QUIET=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-images.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$VARIANT" in
  full|slim) TARGETS=("$VARIANT") ;;
  both) TARGETS=(slim full) ;;
  *) echo "build-images.sh: --variant must be full or slim (or both), not '$VARIANT'" >&2
     exit 2 ;;
esac
# Per target: its build context (images/wheelhouse/CONTEXT) and its tag.
context_of() { if [ "$1" = full ]; then echo runner; else echo runner-slim; fi; }
tag_of() { if [ "$1" = full ]; then echo "testbed-runner:$TAG"; else echo "testbed-runner:$TAG-slim"; fi; }
RUNNERS=()
RUNNER_TAGS=()
for target in "${TARGETS[@]}"; do
  RUNNERS+=("$(context_of "$target")")
  RUNNER_TAGS+=("$(tag_of "$target")")
done

[ -x .venv/bin/python ] || scripts/setup.sh
PY=.venv/bin/python
if ! docker info >/dev/null 2>&1; then
  echo "build-images.sh: no Docker engine answers (scripts/provision-docker.sh starts one)" >&2
  exit 1
fi

now() { date +%s; }
t_all=$(now)
if [ -n "$RELOCK" ]; then
  "$PY" images/wheelhouse.py lock
fi
t0=$(now)
"$PY" images/wheelhouse.py fetch "${RUNNERS[@]}" operator
"$PY" images/wheelhouse.py project
for image in "${RUNNERS[@]}" operator; do
  "$PY" images/wheelhouse.py stage "$image"
done
cache=$("$PY" images/wheelhouse.py cache-dir)
echo "wheel cache: $(du -sh "$cache" | cut -f1) in $cache ($(( $(now) - t0 )) s)"

build() {  # build IMAGE_TAG DOCKERFILE CONTEXT [docker build arguments...]
  local tag=$1 dockerfile=$2 context=$3 previous t0
  shift 3
  t0=$(now)
  echo "building $tag on $BASE ..."
  previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  local args=(--build-arg "BASE=$BASE" "$@" -f "$dockerfile" -t "$tag" "$context")
  if [ -n "$QUIET" ]; then
    docker build --quiet "${args[@]}" >/dev/null
  else
    docker build "${args[@]}"
  fi
  echo "built $tag in $(( $(now) - t0 )) s"
  # The image this tag named before, now untagged: remove it unless something still uses it.
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
  fi
}

for target in "${TARGETS[@]}"; do
  build "$(tag_of "$target")" images/runner.Dockerfile "images/wheelhouse/$(context_of "$target")" \
    --target "$target"
done
build "testbed-operator:$TAG" images/operator.Dockerfile images/wheelhouse/operator

echo "image sizes:"
for tag in "${RUNNER_TAGS[@]}" "testbed-operator:$TAG"; do
  bytes=$(docker image inspect -f '{{.Size}}' "$tag")
  echo "  $tag  $(( bytes / 1000000 )) MB"
done
echo "done in $(( $(now) - t_all )) s"
