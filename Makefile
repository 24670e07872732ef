# `make demo` and `make test` work from a fresh clone: each creates .venv if
# missing and installs jrnn with its dev extra (and torch==2.13.0, the local CPU
# build, for the comparison tests) before running.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

demo: $(STAMP)
	$(BIN)/python -m jrnn.apps.demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
