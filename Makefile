# Shortcuts for the scripts a contributor runs (see CONTRIBUTING.md). Every target calls a
# script under scripts/, so the README commands and CI do exactly the same thing.
.PHONY: help setup run lint fix typecheck imports generate test test-fast test-unit \
        test-engine test-operator test-chart test-images test-cluster cluster

PYTEST = scripts/test.sh --no-lint

help:  ## list the targets
	@grep -E "^[a-z-]+:.*## " $(MAKEFILE_LIST) | sed "s/:.*## /\t/"
setup:  ## create .venv with the locked versions
	scripts/setup.sh
run:  ## the main job: the default benchmark on local Ray and Dask
	scripts/run.sh
lint:  ## ruff, mypy, import contracts, generated files up to date
	scripts/setup.sh && scripts/lint.sh
fix:  ## apply ruff's safe fixes, then lint
	scripts/setup.sh && scripts/lint.sh --fix
typecheck:  ## mypy only
	PYTHONPATH=$(CURDIR):$(CURDIR)/operator .venv/bin/mypy
imports:  ## import-linter contracts only
	PYTHONPATH=$(CURDIR):$(CURDIR)/operator .venv/bin/lint-imports --no-cache
generate:  ## regenerate the CRD and the Grafana dashboard
	scripts/generate.sh
test:  ## everything CI runs: lint, then every test tier
	scripts/test.sh
test-fast:  ## unit tier without real clusters (about a minute)
	$(PYTEST) tests/unit -m "not slow"
test-unit:  ## unit tier
	$(PYTEST) tests/unit
test-engine:  ## real local Ray and Dask clusters
	$(PYTEST) tests/engine
test-operator:  ## the operator against the Kubernetes emulator and the real Dask controller
	$(PYTEST) tests/operator
test-chart:  ## the Helm chart and Prometheus monitors
	$(PYTEST) tests/chart
test-images:  ## build and run the container images (Docker)
	$(PYTEST) tests/images
test-cluster:  ## the real single-node Kubernetes cluster (builds it on first use)
	$(PYTEST) tests/cluster
cluster:  ## build the real cluster's binaries (about 18 min cold)
	scripts/cluster.sh build
