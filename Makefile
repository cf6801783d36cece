# `make demo` and `make test` work on a fresh clone: they build .venv on first use and reuse it.
# TORCH_SPEC picks the torch build: PyPI's Linux wheel is the CUDA one; for CPU only, e.g.
# `make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.ravine-installed
PYTEST_ARGS ?=
# CI's second Python: the oldest one pyproject claims. PyPI's torch for it is the CUDA build (the
# CPU wheel on this disk is cp311 only): about 3 GB in the venv, a few minutes to install.
PYTHON_OLDEST ?= python3.10
VENV_OLDEST ?= .venv-py310
STAMP_OLDEST := $(VENV_OLDEST)/.ravine-installed

.PHONY: setup demo test test-slow test-all test-oldest test-wheel docs docs-serve lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q $(TORCH_SPEC) 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q -r requirements.lock 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip check
	# pip compiles a wheel's modules when it installs them, not an editable install's: where
	# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) every start compiled
	# ravine's sources again (80 ms of `ravine serve`'s first picture). A stale file is ignored.
	$(BIN)/python -m compileall -q src/ravine
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

# The suite on the oldest claimed Python (CI runs it after `make test`).
test-oldest: $(STAMP_OLDEST)
	$(VENV_OLDEST)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider $(PYTEST_ARGS)

$(STAMP_OLDEST): pyproject.toml requirements-py310.lock Makefile
	test -x $(VENV_OLDEST)/bin/python || $(PYTHON_OLDEST) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored" || true; }
	$(VENV_OLDEST)/bin/python -m pip install -q torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(VENV_OLDEST)/bin/python -m pip install -q -r requirements-py310.lock 2>&1 | { grep -v "is ignored" || true; }
	$(VENV_OLDEST)/bin/python -m pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored" || true; }
	$(VENV_OLDEST)/bin/python -m pip check
	touch $(STAMP_OLDEST)

# Build the wheel, install it with torch into a fresh venv and use it from a temp dir.
test-wheel: setup
	$(BIN)/python scripts/check_wheel.py

# The documentation site from docs/ and the docstrings, offline; a warning fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(VENV_OLDEST) build dist site *.egg-info src/*.egg-info .pytest_cache
