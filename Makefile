# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup assets demo demo-quick test test-all bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	$(BIN)/slimguard assets fetch

demo: assets
	$(BIN)/slimguard demo

demo-quick: assets
	$(BIN)/slimguard demo --quick

test: assets
	$(BIN)/python -m pytest -q

test-all: assets
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs .pytest_cache
