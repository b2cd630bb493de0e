# Two commands on a fresh machine (each installs what it needs, idempotently):
#   make repro   - the whole pipeline (`dvc repro`: smoke + default cpu profile), offline
#   make test    - the test suite (unit, integration on real data, notebook validation)
# Others: make data (pull the raw data), make bench (benchmarks -> results/bench/*.json), make lab.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install data repro repro-smoke test bench lab clean-venv

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# raw data from the DVC remote (../shared/dvc-store, relative): offline, idempotent
data: $(STAMP)
	$(BIN)/dvc pull --quiet data.dvc

repro: data
	$(BIN)/dvc repro

repro-smoke: data
	$(BIN)/dvc repro $$($(BIN)/python -m vhrfm.pipeline stages smoke)

# The smoke pipeline runs first so the executed smoke notebooks exist; nbval then re-runs them in a sandbox
# (vhrfm.nbcheck: copies of the smoke outputs), so the tests leave the workspace as dvc.lock has it.
# pytest's exit code 5 (no test collected) is a failure here, never a silent pass.
test: repro-smoke
	$(BIN)/python -m pytest tests -p no:cacheprovider; \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; rc=1; fi; \
	  $(BIN)/python -m vhrfm.nbcheck --profile smoke; nb=$$?; \
	  if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$nb

bench: data
	$(BIN)/python -m vhrfm.bench --out results/bench

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet jupyterlab==4.6.6
	$(BIN)/jupyter lab --ContentsManager.preferred_jupytext_formats_read=py:percent notebooks/

clean-venv:
	rm -rf $(VENV)
