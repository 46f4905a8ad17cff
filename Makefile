# One virtualenv in .venv holds everything; every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,operator]'
	touch $(STAMP)

## run: the proxy on 0.0.0.0:8080 with its embedded defaults (credentials from the environment or ~/.claude)
run: $(STAMP)
	$(BIN)/claude-proxy serve

## test: the whole suite (no cluster, no network beyond 127.0.0.1)
test: $(STAMP)
	$(BIN)/python -m pytest

## bench: the proxy against the upstream called directly, one table (stored in bench/results/); not a test
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; } || \
	  echo "wrk could not be installed: the Python load generator will be used"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check proxy operator tests bench
	$(BIN)/ruff format --check proxy operator tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
