#!/usr/bin/env bash
# Build the real S3 server the tests start (SeaweedFS's `weed`, tests/support/s3server.py) once
# per machine, from its Go module pinned in tools/seaweedfs/go.mod (a wrapper module: `go install
# ...@version` refuses SeaweedFS because its go.mod has replace directives). The binary is cached
# outside the clone, in ${XDG_CACHE_HOME:-~/.cache}/raydask-testbed/bin/weed, and rebuilt only
# when the pin changes (its stamp file records tools/seaweedfs/go.sum's hash).
#
#   scripts/s3server.sh          build if missing or stale; print the binary's path
#   scripts/s3server.sh --path   print the path only (build nothing)
#
# Needs Go >= 1.26 (tools/seaweedfs/go.mod's go line) and the module proxy, or a module cache
# that has the modules. Without Go it says so and exits 0: the S3 tests then skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/raydask-testbed/bin
WEED=$BIN_DIR/weed
if [ "${1:-}" = "--path" ]; then echo "$WEED"; exit 0; fi
[ -z "${1:-}" ] || { echo "s3server.sh: unknown argument '$1'" >&2; exit 2; }
PIN=$(sha256sum tools/seaweedfs/go.sum | cut -d' ' -f1)
if [ -x "$WEED" ] && [ "$(cat "$WEED.stamp" 2>/dev/null)" = "$PIN" ]; then
  echo "$WEED"; exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "s3server.sh: no Go toolchain; the real-S3 tests will skip (install Go >= 1.26)" >&2
  exit 0
fi
mkdir -p "$BIN_DIR"
echo "s3server.sh: building SeaweedFS's weed into $WEED (once per machine; several minutes)" >&2
start=$(date +%s)
(cd tools/seaweedfs && go build -o "$WEED.tmp" github.com/seaweedfs/seaweedfs/weed)
mv "$WEED.tmp" "$WEED"
echo "$PIN" > "$WEED.stamp"
echo "s3server.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$WEED"
