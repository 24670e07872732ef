# Every target works from a fresh clone: it creates .venv if missing and installs what it needs, once
# (a stamp file in .venv records each install; editing pyproject.toml or this Makefile redoes it).
#   make demo   jrnn and its core dependencies only (no torch, no test tools)
#   make test   + torch==2.13.0 (the local CPU build, for the comparison tests) and the dev extra
#   make docs   + the docs extra (Sphinx, myst-nb); builds the site into docs/_build/html
# A larger install satisfies the smaller ones: after `make test`, `make demo` installs nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.core-stamp
DEV    := $(VENV)/.dev-stamp
DOCS   := $(VENV)/.docs-stamp
# An unpinned torch pulls gigabytes of CUDA packages; the pin (jrnn[torch]) is the CPU build here.
TORCH  := torch==2.13.0

.PHONY: setup lint format test demo docs clean

setup: $(DEV)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(CORE): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $(CORE)

$(DEV): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(DEV) $(CORE)

$(DOCS): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $(DOCS) $(DEV) $(CORE)

# ruff (lint, then formatting) over the code and tests, and pyright over jrnn/
# (configured in pyproject.toml). `make format` applies what the first two ask for.
lint: $(DEV)
	$(BIN)/ruff check jrnn tests docs/conf.py
	$(BIN)/ruff format --check jrnn tests docs/conf.py
	$(BIN)/pyright

format: $(DEV)
	$(BIN)/ruff check --fix jrnn tests docs/conf.py
	$(BIN)/ruff format jrnn tests docs/conf.py

# The tests and the docstring examples (doctests in jrnn/), after the lint.
test: lint
	$(BIN)/python -m pytest -n 2 -q

demo: $(CORE)
	$(BIN)/python -m jrnn.apps.demo

# The documentation site, warnings as errors; docs/conf.py executes the notebooks during the build.
docs: $(DOCS)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis docs/_build dist build jrnn.egg-info
