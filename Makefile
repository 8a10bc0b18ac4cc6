# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup assets compressor demo demo-quick test test-all bench clean

SG_HOME := $(or $(SLIMGUARD_HOME),$(HOME)/.cache/slimguard)
COMPRESSOR := $(SG_HOME)/compressors/default/config.json

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,gpu]'
	touch $(STAMP)

setup: $(STAMP)

assets: setup
	$(BIN)/slimguard assets fetch

# The prompt compressor is trained here, once: self-information labels on 60 chunks from six genres, then
# MiniLM-L6 with an eval curve (docs/compress.md; <= 15 minutes on 2 cores).
$(COMPRESSOR): | assets
	$(BIN)/slimguard compress distill --signal self-info --max-chunks 60 --set batch_size=4 --run compress-distill-self-info --overwrite
	$(BIN)/slimguard compress train --data runs/compress-distill-self-info --run compress-train-si --overwrite \
	  --out $(SG_HOME)/compressors/default --set max_len=256 --set batch_size=8 --steps 48 \
	  --set lr=3e-4 --set warmup=4 --set freeze_layers=2 --set eval_every=8

compressor: $(COMPRESSOR)

demo: assets compressor
	$(BIN)/slimguard demo --overwrite

demo-quick: assets compressor
	$(BIN)/slimguard demo --quick --overwrite

test: assets
	$(BIN)/python -m pytest -q

test-all: assets
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs .pytest_cache
