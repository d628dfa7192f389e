#!/usr/bin/env bash
# Regenerate the files built from code: the Benchmark CRD (from bench.spec, via
# testbed_operator.crd) in operator/crds/ and the chart, and the Grafana dashboard (from
# testbed_operator.dashboard), and the chart's README (from values.yaml's `# --` comments,
# scripts/chart_readme.py; it fails on an undocumented value).
#   scripts/generate.sh           write them
#   scripts/generate.sh --check   only report which differ (exit 1), as the tests would
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=""
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  *) echo "generate.sh: unknown argument '$1' (expected --check or nothing)" >&2; exit 2 ;;
esac
export PYTHONPATH="$PWD:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m testbed_operator.crd > "$tmp/crd.yaml"
.venv/bin/python -m testbed_operator.dashboard > "$tmp/dashboard.json"
.venv/bin/python scripts/chart_readme.py charts/testbed > "$tmp/README.md"
stale=0
check() {  # check GENERATED TARGET: compare, and write TARGET unless --check
  if ! cmp -s "$1" "$2"; then
    if [ -n "$CHECK" ]; then
      echo "generate.sh: $2 is stale; run scripts/generate.sh (make generate)" >&2
      stale=1
    else
      cp "$1" "$2" && echo "wrote $2"
    fi
  fi
}
check "$tmp/crd.yaml" operator/crds/benchmark.yaml
check "$tmp/crd.yaml" charts/testbed/crds/benchmark.yaml
check "$tmp/dashboard.json" charts/testbed/dashboards/testbed.json
check "$tmp/README.md" charts/testbed/README.md
exit "$stale"
