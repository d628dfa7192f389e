#!/usr/bin/env bash
# Provision a Docker engine for the image tests (tests/images/test_images.py) on Debian; idempotent:
#   1. apt-get install docker.io and debootstrap if missing;
#   2. start dockerd with no bridge and no iptables rules unless an engine already answers
#      (containers then use --network=host and loopback addresses only); log: $DOCKERD_LOG;
#   3. build the base image testbed-base:bookworm with debootstrap (python3 3.11, python3-venv,
#      ca-certificates) + docker import, unless it exists. No registry is needed: the images
#      build FROM it (scripts/build-images.sh --base testbed-base:bookworm).
# Needs root. Environment: DEBIAN_MIRROR (default: the Debian mirror in apt's sources, else
# http://deb.debian.org/debian), BASE_IMAGE (testbed-base:bookworm), DOCKERD_LOG
# (/tmp/dockerd.log).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-testbed-base:bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
SUITE=bookworm

if [ "$(id -u)" != 0 ]; then
  echo "provision-docker.sh: needs root (apt-get, dockerd, debootstrap)" >&2
  exit 1
fi

elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# -- 1. packages ---------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  t0=$(date +%s)
  # Install only: keep the packages from starting daemons (dockerd is started below).
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  status=0
  { apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         "${missing[@]}" >/dev/null; } || status=$?
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$status" != 0 ]; then
    echo "provision-docker.sh: apt-get install ${missing[*]} failed" >&2
    exit "$status"
  fi
  echo "installed ${missing[*]} in $(elapsed "$t0")"
fi

# -- 2. the engine ---------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  t0=$(date +%s)
  pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    rm -f "$pidfile"  # left by an engine that died: dockerd refuses to start over it
  fi
  setsid nohup dockerd --bridge=none --iptables=false >"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "provision-docker.sh: dockerd did not answer within 60 s; the end of $DOCKERD_LOG:" >&2
    tail -n 20 "$DOCKERD_LOG" >&2
    exit 1
  fi
  echo "dockerd started in $(elapsed "$t0") (log: $DOCKERD_LOG)"
fi

# -- 3. the debootstrap base image -----------------------------------------------------------
debian_mirror() {
  local uri=""
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  # The first non-security Debian archive in apt's sources (deb822 or one-line format).
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
          2>/dev/null | grep -E '^[[:space:]]*(URIs:|deb[[:space:]])' | grep -v security \
          | grep -o -m 1 -E 'https?://[^[:space:]]+/debian/?' || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  t0=$(date +%s)
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /tmp/testbed-base.XXXXXX)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  echo "debootstrap $SUITE from $mirror ..."
  if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
         "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    echo "provision-docker.sh: debootstrap failed; the end of its log:" >&2
    tail -n 20 "$rootfs.log" >&2
    exit 1
  fi
  # Package caches, lists and documentation are not needed in a base image.
  rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/* \
         "${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/*
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
  echo "built $BASE_IMAGE ($(docker run --rm --network=host "$BASE_IMAGE" python3 --version)) in $(elapsed "$t0")"
fi
