#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the testbed with exactly the tested versions.
# Idempotent: a second run only checks that everything is installed.
#
#   scripts/setup.sh [--relock]
#
# Every version comes from images/requirements-venv.txt (the lock; pyproject.toml holds the
# direct pins), used as pip constraints. The wheels come from the wheel cache shared by every
# clone on this machine ($TESTBED_WHEELHOUSE, by default
# ${XDG_CACHE_HOME:-~/.cache}/raydask-testbed/wheelhouse): pip downloads into it only the pinned
# wheels it lacks (pip's own HTTP cache keeps nothing from this registry), then installs from it
# with --no-index. torch is PyPI's 2.13.0 (the CUDA build, run on the CPU) with its nvidia-*
# wheels: about 3 GB of wheels, 6 GB installed.
#
#   --relock  after changing a pin in pyproject.toml: install from the index without the lock,
#             then regenerate images/requirements-*.txt from the result
set -euo pipefail
cd "$(dirname "$0")/.."
RELOCK=""
case "${1:-}" in
  "") ;;
  --relock) RELOCK=1 ;;
  -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" - <<'PYEOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"the testbed needs Python 3.11 (ray/torch pins); found {sys.version.split()[0]}")
PYEOF
# A .venv whose creation was interrupted (no pip yet) is made again.
if [ -x .venv/bin/python ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "setup.sh: .venv is incomplete (no pip); creating it again" >&2
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if [ -n "$RELOCK" ]; then
  "$VPY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
  "$VPY" images/wheelhouse.py lock
fi
"$VPY" images/wheelhouse.py fetch venv
"$VPY" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$("$VPY" images/wheelhouse.py cache-dir)" \
    -c images/requirements-venv.txt -e ".[test]" \
  || { echo "setup.sh: the install failed; if pyproject.toml's pins changed, run" \
            "scripts/setup.sh --relock" >&2; exit 1; }
"$VPY" -c "import bench, ray, dask, distributed, sklearn, torch; print('testbed environment ready:', 'ray', ray.__version__, 'dask', dask.__version__, 'torch', torch.__version__)"
