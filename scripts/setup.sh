#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the testbed with its pinned dependencies.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" - <<'PYEOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"the testbed needs Python 3.11 (ray/torch pins); found {sys.version.split()[0]}")
PYEOF
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch==2.13.0 is pinned to the CPU build; pip's find-links supplies it on these machines.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -c "import bench, ray, dask, distributed, sklearn, torch; print('testbed environment ready:', 'ray', ray.__version__, 'dask', dask.__version__, 'torch', torch.__version__)"
