# `make demo` and `make test` work from a fresh clone: each creates .venv if
# missing and installs jrnn with its dev extra (and torch==2.13.0, the local CPU
# build, for the comparison tests) before running.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup lint format test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# ruff (lint, then formatting) over the code and tests, and pyright over jrnn/
# (configured in pyproject.toml). `make format` applies what the first two ask for.
lint: $(STAMP)
	$(BIN)/ruff check jrnn tests
	$(BIN)/ruff format --check jrnn tests
	$(BIN)/pyright

format: $(STAMP)
	$(BIN)/ruff check --fix jrnn tests
	$(BIN)/ruff format jrnn tests

# The tests and the docstring examples (doctests in jrnn/), after the lint.
test: lint
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/python -m jrnn.apps.demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
