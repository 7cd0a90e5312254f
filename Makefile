# Assay: `make demo` runs the whole stack once; `make test` runs the suite;
# `make image` builds the container image with podman (deploy/podman/image.sh).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint gen docs demo clean image test-deploy test-prod-shape

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml clients/python/pyproject.toml
	$(PY) -m pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/buf lint

gen: $(STAMP)
	$(PY) tools/gen_protos.py gen

docs: $(STAMP)
	$(PY) tools/gen_docs.py
	$(VENV)/bin/pdoc --docformat markdown -o build/docs/client assay_client
	@echo "docs: docs/architecture.md regenerated; the client's API reference is build/docs/client/index.html"

demo: $(STAMP)
	$(VENV)/bin/assay demo

# The one image (assay:dev), built with podman from a locally made Debian base image.
image:
	deploy/podman/image.sh

# The dev overlay's rendered pod specs, run in podman containers end to end (tools/podkube).
test-deploy: $(STAMP) image
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/deploy/podman/containers.conf} \
		$(PY) -m tools.podkube

# The prod overlay's topology (3 NATS nodes, replicated services) under load and faults, with
# the same runner (tools/podkube/prodshape.py). Its own image tag: never another run's image.
PRODSHAPE_IMAGE ?= assay:prodshape
test-prod-shape: $(STAMP)
	IMAGE=$(PRODSHAPE_IMAGE) deploy/podman/image.sh
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/deploy/podman/containers.conf} \
		PODKUBE_IMAGE=localhost/$(PRODSHAPE_IMAGE) $(PY) -m tools.podkube.prodshape

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
