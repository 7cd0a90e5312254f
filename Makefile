# Assay: `make demo` runs the whole stack once; `make test` runs the suite;
# `make image` builds the container image with podman (deploy/podman/image.sh);
# `make test-node` tests the Node client (clients/node) against a stack of its own.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint buf-breaking gen docs demo clean image test-deploy test-node test-upgrade \
	test-prod-shape

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The Node client's packages, exactly as its lock file says.
NODE_CLIENT := clients/node
NODE_STAMP := $(NODE_CLIENT)/node_modules/.installed
$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/buf lint
	$(MAKE) --no-print-directory buf-breaking

# The protos against the last release's (CHANGELOG.md names its commit; read from git history):
# fields are added, never renamed, renumbered or retyped (docs/operations.md#upgrading).
buf-breaking: $(STAMP)
	@against=$$(mktemp -d) && trap 'rm -rf "$$against"' EXIT && \
		$(PY) -m tools.upgrade.release --export-protos "$$against/release" >/dev/null && \
		echo "buf breaking against release $$($(PY) -m tools.upgrade.release --field version)" && \
		$(VENV)/bin/buf breaking --against "$$against/release"

gen: $(STAMP) $(NODE_STAMP)
	$(PY) tools/gen_protos.py gen
	$(PY) tools/gen_protos.py --ts

# Build (tsc), then `tsc --noEmit` under strict while `assay dev up` starts a stack, node --test
# against it, and the stack always stopped again (clients/node/test/run-against-stack.ts).
test-node: $(STAMP) $(NODE_STAMP)
	cd $(NODE_CLIENT) && npm run build && npm test

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

# The last release (CHANGELOG.md) and the working tree side by side: the release's archive tests
# against the new schema, messages across releases, then a rolling update forward, back and
# forward again under load (tools/upgrade; the release's venv is cached in .upgrade-cache/).
test-upgrade: $(STAMP)
	ASSAY_TEST_UPGRADE=1 $(PY) -m pytest -q tests/upgrade
	$(PY) -m tools.upgrade $(UPGRADE_ARGS)

# The prod overlay's topology (3 NATS nodes, replicated services, TLS) under load and faults,
# with the same runner and image as test-deploy (tools/podkube/prodshape.py).
test-prod-shape: $(STAMP) image
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/deploy/podman/containers.conf} \
		$(PY) -m tools.podkube.prodshape

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
