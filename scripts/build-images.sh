#!/usr/bin/env bash
# Build the runner and operator images (images/*.Dockerfile) and print their sizes.
#
#   scripts/build-images.sh [--base IMAGE] [--tag TAG] [--relock] [--quiet]
#
#   --base IMAGE  base of both images (default python:3.11-slim; testbed-base:bookworm is the
#                 debootstrap base made by scripts/provision-docker.sh, no registry needed)
#   --tag TAG     tags testbed-runner:TAG and testbed-operator:TAG (default 0.1.0, the chart's)
#   --relock      regenerate images/requirements-*.txt from pyproject.toml and the .venv first
#   --quiet       only the steps' summaries, not docker's build output
#
# The wheelhouse is made on this host (images/wheelhouse/, gitignored): pip fetches the wheels
# pinned in images/requirements-*.txt into images/wheelhouse/cache/ unless they are all there
# already, and builds the project's wheel. Each image's build context is its own staged folder
# (images/wheelhouse/runner|operator/: requirements.txt, deps/, project/), and the Dockerfiles
# install with `pip install --no-index`: the build containers need no registry access.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=python:3.11-slim
TAG=0.1.0
RELOCK=""
QUIET=""

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

while [ "$#" -gt 0 ]; do
  case "$1" in
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
"$PY" images/wheelhouse.py fetch
for image in runner operator; do
  "$PY" images/wheelhouse.py stage "$image"
done
echo "wheelhouse: $(du -sh images/wheelhouse/cache | cut -f1) in images/wheelhouse/cache ($(( $(now) - t0 )) s)"

for image in runner operator; do
  t0=$(now)
  echo "building testbed-$image:$TAG on $BASE ..."
  previous=$(docker image inspect -f '{{.Id}}' "testbed-$image:$TAG" 2>/dev/null || true)
  args=(--build-arg "BASE=$BASE" -f "images/$image.Dockerfile" -t "testbed-$image:$TAG"
        "images/wheelhouse/$image")
  if [ -n "$QUIET" ]; then
    docker build --quiet "${args[@]}" >/dev/null
  else
    docker build "${args[@]}"
  fi
  echo "built testbed-$image:$TAG in $(( $(now) - t0 )) s"
  # The image this tag named before, now untagged: remove it unless something still uses it.
  if [ -n "$previous" ] \
     && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "testbed-$image:$TAG")" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
  fi
done

echo "image sizes:"
for image in runner operator; do
  bytes=$(docker image inspect -f '{{.Size}}' "testbed-$image:$TAG")
  echo "  testbed-$image:$TAG  $(( bytes / 1000000 )) MB"
done
echo "done in $(( $(now) - t_all )) s"
