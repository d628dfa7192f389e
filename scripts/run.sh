#!/usr/bin/env bash
# Set up (if needed) and run the default benchmark: every workload but resnet18 on the digits
# data, Ray and Dask at 1 and 2 workers on local clusters, plus the local baselines.
# Extra arguments go to `testbed run` (e.g. scripts/run.sh -l knn -w 1,2,4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/testbed run --report results/report.html "$@"
