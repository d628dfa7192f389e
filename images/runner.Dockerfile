# The runner image: the testbed engine with Ray, Dask/distributed, dask[dataframe], scikit-learn,
# boto3, prometheus-client, bokeh, the Kubernetes client, the libraries tier's libraries (Ray
# Data/Train/Tune, dask-ml, xgboost-cpu) and, in the full variant, torch. One image
# serves as Ray head and worker (`ray start ...`), Dask scheduler and worker (`dask
# scheduler|worker ...`) and the runner (`testbed runner ...`); the operator's manifests give the
# command.
#
# Two variants (build argument VARIANT), one Dockerfile:
#   full  torch 2.13.0 from PyPI (the CUDA build with its nvidia-*/triton wheels; it runs on the
#         CPU): every workload, cnn and resnet18 included. Lock: images/requirements-runner.txt.
#   slim  no torch and nothing only torch needs: every workload but cnn and resnet18. Lock:
#         images/requirements-runner-slim.txt.
#
# Build context: images/wheelhouse/runner/ or images/wheelhouse/runner-slim/, staged by
# scripts/build-images.sh (requirements.txt: every package pinned; deps/: their wheels;
# project/: the testbed's wheel). Everything is installed with --no-index: the build needs no
# registry access. Works with the classic builder and with BuildKit.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG VARIANT=full
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
# /opt/pip holds the installer; /opt/venv (created without pip) gets exactly the pinned packages.
COPY requirements.txt /wheels/requirements.txt
COPY deps/ /wheels/deps/
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --find-links /wheels/deps \
      -r /wheels/requirements.txt \
 && /opt/pip/bin/pip --python /opt/venv/bin/python check
COPY project/ /wheels/project/
# The slim variant lacks exactly one of the testbed's requirements, torch: `pip check` must report
# that and nothing else, and torch must not import.
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps /wheels/project/*.whl \
 && case "$VARIANT" in \
      full) /opt/pip/bin/pip --python /opt/venv/bin/python check \
            && /opt/venv/bin/python -c "import torch" ;; \
      slim) /opt/pip/bin/pip --python /opt/venv/bin/python check >/tmp/check 2>&1; \
            grep -qxE 'raydask-testbed [^ ]+ requires torch, which is not installed\.' /tmp/check \
            && ! grep -vxE 'raydask-testbed [^ ]+ requires torch, which is not installed\.' /tmp/check \
            && ! /opt/venv/bin/python -c "import torch" 2>/dev/null ;; \
      *) echo "VARIANT must be full or slim, not '$VARIANT'" >&2; false ;; \
    esac \
 && /opt/venv/bin/python -c "import bench.cli, ray, dask.dataframe, distributed, sklearn, \
boto3, prometheus_client, kubernetes, bench.kube.channel, bench.kube.faults, bokeh, xgboost, \
xgboost.dask, dask_ml.model_selection, ray.data, ray.train, ray.tune" \
 && /opt/venv/bin/testbed --help >/dev/null

FROM ${BASE}
ARG VARIANT=full
LABEL org.raydask-testbed.variant=${VARIANT}
RUN groupadd --gid 1000 testbed \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/testbed --shell /bin/bash testbed
COPY --from=build /opt/venv /opt/venv
# A full PATH: an imported base image (debootstrap + docker import) defines none.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/testbed \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER 1000:1000
WORKDIR /home/testbed
CMD ["testbed", "--help"]
