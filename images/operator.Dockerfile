# The operator image: the Kopf operator (testbed-operator) and only what it imports: kopf, the
# Kubernetes client, pydantic, PyYAML, numpy (result statistics), prometheus-client, boto3 (the
# S3 copy of the results). The testbed itself is installed with --no-deps: no Ray, Dask,
# scikit-learn or torch here.
#
# Build context: images/wheelhouse/operator/, staged by scripts/build-images.sh (see
# runner.Dockerfile). Installed with --no-index: the build needs no registry access. Layers as in
# runner.Dockerfile: the packages, then the testbed on top, so a code change rebuilds only that.
ARG BASE=python:3.11-slim

# ---- the pinned packages, consistent among themselves -----------------------------------------
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
COPY requirements.txt /wheels/requirements.txt
COPY deps/ /wheels/deps/
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --find-links /wheels/deps \
      -r /wheels/requirements.txt \
 && /opt/pip/bin/pip --python /opt/venv/bin/python check

# ---- the testbed, installed apart (--prefix: the venv's own layout) so that a change to its code
# rebuilds only its own small layer. Every operator module must import with these packages alone.
FROM deps AS project
COPY project/ /wheels/project/
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --no-index --no-deps \
      --prefix /opt/project /wheels/project/*.whl \
 && export PYTHONPATH="/opt/project/$(/opt/venv/bin/python -c 'import os, sys, sysconfig; \
print(os.path.relpath(sysconfig.get_path("purelib"), sys.prefix))')" \
 && /opt/venv/bin/python -c "import pkgutil, importlib, testbed_operator; \
[importlib.import_module(m.name) for m in pkgutil.walk_packages(testbed_operator.__path__, 'testbed_operator.')]; \
import bench.results, bench.spec, bench.params, boto3, numpy" \
 && /opt/project/bin/testbed-operator --help >/dev/null

FROM ${BASE}
RUN groupadd --gid 1000 testbed \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/testbed --shell /bin/bash testbed
COPY --from=deps /opt/venv /opt/venv
COPY --from=project /opt/project/ /opt/venv/
# A full PATH: an imported base image (debootstrap + docker import) defines none.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/testbed \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /home/testbed
ENTRYPOINT ["testbed-operator"]
