#!/bin/sh
# The runner image's build checks (images/runner.Dockerfile), run in its build stages as
#   sh /wheels/check.sh slim|full
# with /opt/venv holding slim's packages, /opt/project the testbed (`pip install --prefix`) and,
# for full, /opt/torch torch's packages. The final image copies both prefixes onto /opt/venv, so
# the checks see them as it will: on the venv's sys.path, through PYTHONPATH.
set -eu
variant=$1
venv=/opt/venv/bin/python
pip="/opt/pip/bin/pip --python $venv"
# A prefix install has the venv's own layout (the final COPY relies on it): lib/pythonX.Y/... .
rel=$($venv -c 'import os, sys, sysconfig; print(os.path.relpath(sysconfig.get_path("purelib"), sys.prefix))')
prefixes=/opt/project
[ "$variant" = full ] && prefixes="/opt/torch /opt/project"
path=""
for prefix in $prefixes; do
  if [ ! -d "$prefix/$rel" ]; then
    echo "check.sh: $prefix has no $rel: its layout is not the venv's" >&2
    exit 1
  fi
  path="$prefix/$rel${path:+:$path}"
done
export PYTHONPATH="$path"
missing_torch='raydask-testbed [^ ]+ requires torch, which is not installed\.'
case "$variant" in
  full)
    $pip check
    $venv -c "import torch" ;;
  # slim lacks exactly one of the testbed's requirements, torch: `pip check` must report that
  # and nothing else, and torch must not import.
  slim)
    $pip check >/tmp/check 2>&1 || true
    grep -qxE "$missing_torch" /tmp/check
    if grep -vxE "$missing_torch" /tmp/check; then exit 1; fi
    if $venv -c "import torch" 2>/dev/null; then
      echo "check.sh: torch imports in the slim variant" >&2
      exit 1
    fi ;;
  *) echo "check.sh: the variant must be full or slim, not '$variant'" >&2; exit 1 ;;
esac
$venv -c "import bench.cli, ray, dask.dataframe, distributed, sklearn, boto3, \
prometheus_client, kubernetes, bench.kube.channel, bench.kube.faults, bokeh, xgboost, \
xgboost.dask, dask_ml.model_selection, ray.data, ray.train, ray.tune"
/opt/project/bin/testbed --help >/dev/null
echo "check.sh: the $variant runner's packages and the testbed check out"
