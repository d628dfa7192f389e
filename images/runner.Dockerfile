# The runner image: the testbed engine with Ray, Dask/distributed, dask[dataframe], scikit-learn,
# boto3, prometheus-client, bokeh, the Kubernetes client, the libraries tier's libraries (Ray
# Data/Train/Tune, dask-ml, xgboost-cpu) and, in the full variant, torch. One image
# serves as Ray head and worker (`ray start ...`), Dask scheduler and worker (`dask
# scheduler|worker ...`) and the runner (`testbed runner ...`); the operator's manifests give the
# command.
#
# Two variants, two targets of this one Dockerfile (`docker build --target slim|full`):
#   slim  no torch and nothing only torch needs: every workload but cnn, resnet18 and train.
#         Lock: images/requirements-runner-slim.txt.
#   full  slim's packages plus torch 2.13.0 from PyPI (the CUDA build with its nvidia-*/triton
#         wheels; it runs on the CPU): every workload. Lock: images/requirements-runner.txt.
#
# Layers, so that both variants share what they can and a change to the testbed's own code
# rebuilds only a small layer:
#   slim  base, user, /opt/venv with slim's packages (runtime)            + the testbed
#   full  base, user, /opt/venv with slim's packages (runtime) + torch's  + the testbed
# The packages are installed in build stages with an installer (/opt/pip) that stays there; torch's
# and the testbed's are installed with `--prefix`, the venv's own layout, and copied onto
# /opt/venv: the images hold no wheel, no installer and no pip cache.
#
# Build context: images/wheelhouse/runner/ or images/wheelhouse/runner-slim/, staged by
# scripts/build-images.sh (requirements.txt and deps/: slim's pinned packages and their wheels;
# in runner/ also requirements-torch.txt and deps-torch/: what the full lock adds; project/: the
# testbed's wheel; check.sh: the checks below). Everything is installed with --no-index: the
# build needs no registry access. Works with the classic builder and with BuildKit.
ARG BASE=python:3.11-slim

# ---- slim's pinned packages, consistent among themselves (`pip check`) -----------------------
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
COPY requirements.txt /wheels/requirements.txt
COPY deps/ /wheels/deps/
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --find-links /wheels/deps \
      -r /wheels/requirements.txt \
 && /opt/pip/bin/pip --python /opt/venv/bin/python check
COPY check.sh /wheels/check.sh

# ---- the testbed on slim's packages: torch must be the one requirement missing ---------------
FROM deps AS project-slim
COPY project/ /wheels/project/
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps \
      --prefix /opt/project /wheels/project/*.whl \
 && sh /wheels/check.sh slim

# ---- what both variants run on --------------------------------------------------------------
FROM ${BASE} AS runtime
RUN groupadd --gid 1000 testbed \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/testbed --shell /bin/bash testbed
COPY --from=deps /opt/venv /opt/venv
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

FROM runtime AS slim
COPY --from=project-slim /opt/project/ /opt/venv/
LABEL org.raydask-testbed.variant=slim

# ---- full: torch and what only torch needs, then the testbed with every requirement met -----
FROM deps AS torch
COPY requirements-torch.txt /wheels/requirements-torch.txt
COPY deps-torch/ /wheels/deps-torch/
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps \
      --prefix /opt/torch --find-links /wheels/deps-torch -r /wheels/requirements-torch.txt

FROM torch AS project-full
COPY project/ /wheels/project/
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps \
      --prefix /opt/project /wheels/project/*.whl \
 && sh /wheels/check.sh full

FROM runtime AS full
COPY --from=torch /opt/torch/ /opt/venv/
COPY --from=project-full /opt/project/ /opt/venv/
LABEL org.raydask-testbed.variant=full
