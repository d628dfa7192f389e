#!/usr/bin/env bash
# Lint, typecheck and import contracts (configured in pyproject.toml); part of scripts/test.sh.
#   scripts/lint.sh          check only (what CI runs)
#   scripts/lint.sh --fix    also apply ruff's safe fixes
# Each tool runs even when an earlier one fails, so one run shows every finding.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
V=.venv/bin
FIX=""
case "${1:-}" in
  "") ;;
  --fix) FIX=--fix ;;
  *) echo "lint.sh: unknown argument '$1' (expected --fix or nothing)" >&2; exit 2 ;;
esac
# The operator package lives under operator/; the linters import it from the tree, not the venv.
export PYTHONPATH="$PWD:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
failed=()
echo "== ruff" && "$V/ruff" check $FIX --quiet . || failed+=(ruff)
echo "== mypy" && "$V/mypy" || failed+=(mypy)
echo "== import contracts" && "$V/lint-imports" --no-cache || failed+=(lint-imports)
echo "== generated files" && scripts/generate.sh --check || failed+=(generated)
if [ "${#failed[@]}" -gt 0 ]; then
  echo "lint.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint.sh: ruff, mypy, import contracts and generated files are clean"
