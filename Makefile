# The two commands of README.md: `make demo` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# --progress-bar is an option of `pip install`, so it goes after the command.
INSTALL := $(PIP) install --progress-bar off
# pip prints one warning per missing local mirror folder on this machine; keep the rest.
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: demo test lint format test-slow bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -q -c constraints.txt -e . $(QUIET)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(INSTALL) -q -c constraints.txt -e '.[dev,ray]' $(QUIET)
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(INSTALL) -q -c constraints.txt -e '.[dev,ray,bench]' $(QUIET)
	touch $@

install: $(VENV)/.installed

## demo: the main job on the embedded default data (scikit-learn digits)
demo: $(VENV)/.installed
	$(BIN)/poisonlab demo --out demo-output --force

## test: lint, format check, then the unit test suite (what CI runs)
test: $(VENV)/.installed-dev lint
	$(BIN)/python -m pytest -q

## lint: ruff (style, imports, pydocstyle docstrings), the formatter check and mypy (pyproject.toml)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## test-slow: the heavier marked checks (real data, longer training); not part of CI
test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m slow

## bench: the benchmarks in bench/ (side by side with ART and POT); not part of CI
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
