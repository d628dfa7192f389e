#!/usr/bin/env bash
# Set up (if needed), lint (ruff, mypy, import contracts, generated files: scripts/lint.sh) and
# run the whole test suite: every tier under tests/ (unit, engine, operator, chart, images,
# real cluster). Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -m "not slow").
#   --no-lint  skip the lint step (the make targets for one tier use it)
# The lint step runs first but does not hide test results: both run, and either failing fails.
set -euo pipefail
cd "$(dirname "$0")/.."
LINT=1
if [ "${1:-}" = "--no-lint" ]; then LINT=""; shift; fi
scripts/setup.sh
# The real S3 server of the partitioned-data tests (built once per machine, cached).
scripts/s3server.sh >/dev/null
export RAY_USAGE_STATS_ENABLED=0
lint_rc=0
if [ -n "$LINT" ]; then
  scripts/lint.sh || lint_rc=$?
fi
set +e
.venv/bin/python -m pytest -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
if [ "$lint_rc" -ne 0 ]; then
  echo "test.sh: the tests ran, but lint failed (scripts/lint.sh above)" >&2
  [ "$rc" -ne 0 ] || rc=$lint_rc
fi
exit "$rc"
