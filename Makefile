# One virtualenv in .venv holds everything; every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck clean

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

lint: $(STAMP)
	$(BIN)/ruff check proxy operator tests
	$(BIN)/ruff format --check proxy operator tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
