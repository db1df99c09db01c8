# voicegate: `make run` starts the gateway, `make test` runs every check. Both set up what they
# need on a fresh machine (a Python >= 3.12 virtualenv in .venv; Debian packages for the tests).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8080
BACKEND ?= auto
PYTEST_ARGS ?=
DEBS := espeak-ng sox chromium coturn iproute2 nghttp2-server
STAMP = $(VENV)/.installed-$(1)-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test setup setup-test debs lint typecheck pytest bench bench-full standin clean

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

setup-test: $(PY)
	@if [ ! -f "$(call STAMP,test)" ]; then \
	  $(PY) -m pip install --quiet -e '.[default,dev]' && rm -f $(VENV)/.installed-* && \
	  touch "$(call STAMP,test)" "$(call STAMP,default)"; fi

# Debian packages the tests drive for real: espeak-ng and sox make speech, chromium is the browser,
# coturn the TURN relay, iproute2 the network namespaces, nghttp2-server (nghttpd) an independent
# HTTP/2 server for the Bedrock transport's interop tests.
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

typecheck: setup-test
	$(VENV)/bin/mypy

# Tests talk to loopback only: never let boto3's credential chain probe instance metadata.
pytest: setup-test
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/pytest $(PYTEST_ARGS)

# issue 5: `make bench` is the short run (< ~5 min); `make bench-full` the documented full one.
bench: setup-test debs
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e '.[default,dev,bench]'
	$(PY) -m benchmarks.run --short

bench-full: setup-test debs
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e '.[default,dev,bench]'
	$(PY) -m benchmarks.run --full

standin: setup
	$(VENV)/bin/voicegate standin --port 8443 --cert-dir .standin

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
