# voicegate: `make run` starts the gateway, `make test` runs every check. Both set up what they
# need on a fresh machine (a Python >= 3.12 virtualenv in .venv; Debian packages for the tests).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
BACKEND ?= auto
PYTEST_ARGS ?=
DEBS := espeak-ng sox chromium coturn iproute2 nftables redis-server nghttp2-server postgresql
STAMP = $(VENV)/.installed-$(1)-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test setup setup-test debs lint typecheck pytest pytest-quirks bench bench-full chaos standin clean \
	image image-local image-test image-debs test-unit test-integration test-browser test-system

run: setup
	$(VENV)/bin/voicegate serve --host $(HOST) --port $(PORT) --backend $(BACKEND)

test: setup-test debs lint typecheck pytest

$(PY):
	@py=$$(scripts/find-python) && echo "using $$py" && "$$py" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)
	@if [ ! -f "$(call STAMP,default)" ]; then \
	  $(PY) -m pip install --quiet -e '.[default]' && rm -f $(VENV)/.installed-default-* && \
	  touch "$(call STAMP,default)"; fi

# Pipecat's JavaScript client for the browser test that drives it (tests/browser/pipecat):
# installed from the committed lock file, bundled by the test itself with the pinned esbuild.
PIPECAT_JS := tests/browser/pipecat
$(PIPECAT_JS)/node_modules/.installed: $(PIPECAT_JS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing (install Node.js 20+ with npm)"; exit 1; }
	npm ci --prefix $(PIPECAT_JS) --no-audit --no-fund --loglevel=error && touch $@

setup-test: $(PY) $(PIPECAT_JS)/node_modules/.installed
	@if [ ! -f "$(call STAMP,test)" ]; then \
	  $(PY) -m pip install --quiet -e '.[default,dev]' && rm -f $(VENV)/.installed-* && \
	  touch "$(call STAMP,test)" "$(call STAMP,default)"; fi
	@# The Node.js token-minting example's one dependency (jose), pinned in examples/; without
	@# node/npm the example's test says so (and fails under CI=true).
	@[ -d examples/node_modules/jose ] || ! command -v npm >/dev/null || \
	  npm ci --prefix examples --no-audit --no-fund --silent

# Debian packages the tests drive for real: espeak-ng and sox make speech, chromium is the browser,
# coturn the TURN relay, iproute2 the network namespaces, nftables the links cut inside them,
# redis-server the cluster directory, nghttp2-server (nghttpd) an independent HTTP/2 server for
# the Bedrock transport's interop tests, postgresql the call history's cluster store.
debs:
	@missing=""; \
	for pkg in $(DEBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or: sudo apt-get install$$missing)"; fi; \
	fi

lint: setup-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	PYTHONPATH=src $(VENV)/bin/lint-imports

typecheck: setup-test
	$(VENV)/bin/mypy

# Tests talk to loopback only: never let boto3's credential chain probe instance metadata.
pytest: setup-test
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/pytest $(PYTEST_ARGS)
	$(MAKE) pytest-quirks

# The Bedrock suite once more against a stand-in with every quirk of real Bedrock on.
BEDROCK_SUITE = $(addprefix tests/integration/,test_bedrock_backend.py test_call_bedrock.py \
	test_reconnect.py test_renewal.py test_typed_text.py test_credential_rotation.py \
	test_retry_policy.py test_standin_quirks.py test_bedrock_async_tools.py test_bedrock_nova2.py \
	test_bedrock_fanout.py test_bedrock_input_rate.py test_replay_pacing.py)
pytest-quirks: setup-test
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/pytest $(BEDROCK_SUITE) --standin-quirks all \
		$(PYTEST_ARGS)

# One group of tests/ each (tests/README.md says what each needs); `make test` runs them all.
TEST_GROUPS := unit integration browser system
$(addprefix test-,$(TEST_GROUPS)): test-%: setup-test
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/pytest tests/$* $(PYTEST_ARGS)

# `make bench` is the short run (about 20 min); `make bench-full` the full one (about 90 min).
bench: setup-test debs
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e '.[default,dev,bench]'
	$(PY) -m benchmarks.run --short
	PYTHONPATH=src $(PY) -m benchmarks.chaos
	PYTHONPATH=src $(PY) -m benchmarks.page_failover

# Faults against live calls (kill -9, SIGSTOP, Redis restart and freeze, drain, worker kill,
# rolling restart, offer bursts, partitions in network namespaces: root), 3 runs each; writes
# benchmarks/results/chaos.json and the table in docs/cluster.md (about 8 minutes); exits 1 when
# a call was lost or a record wrong.
chaos: setup-test debs
	PYTHONPATH=src $(PY) -m benchmarks.chaos

bench-full: setup-test debs
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e '.[default,dev,bench]'
	$(PY) -m benchmarks.run --full

standin: setup
	$(VENV)/bin/voicegate standin --port 8443 --cert-dir .standin

# The container image (Dockerfile, docs/deploy.md) with whichever of docker, podman, buildah
# works. `image` builds FROM python:3.12-slim (needs a registry); `image-local` FROM a Debian
# trixie base made here with mmdebstrap (no registry needed, PyPI through the host's pip
# configuration); `image-test` builds that and checks the running container (minutes).
IMAGE ?= voicegate:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_DEBS := podman buildah mmdebstrap runc
# runc where present: crun cannot set rlimits in some sandboxes.
OCI_RUNTIME ?= $(if $(shell command -v runc),runc,)

image:
	IMAGE=$(IMAGE) scripts/build-image

image-local: image-debs
	IMAGE=$(IMAGE) OCI_RUNTIME=$(OCI_RUNTIME) scripts/build-image --local

image-test: setup-test image-debs
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/pytest tests/system/test_deploy.py -m image $(PYTEST_ARGS)

image-debs:
	@$(MAKE) --no-print-directory debs DEBS="$(IMAGE_DEBS)"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
