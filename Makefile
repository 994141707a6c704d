# Everything runs from a local virtualenv that `make setup` builds once (and again when
# pyproject.toml changes). The first build compiles llama-cpp-python (a few minutes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LITERT_VENV ?= .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.installed
export LLMEDGE_LITERT_PYTHON ?= $(abspath $(LITERT_VENV))/bin/python

.PHONY: setup chat serve test lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

# TFLite conversion only: litert-torch cannot share a virtualenv with pydantic 2.12+.
$(LITERT_STAMP): pyproject.toml
	python3 -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITERT_VENV)/bin/python -m pip install --quiet torch==2.13.0 'litert-torch>=0.10,<0.11'
	touch $(LITERT_STAMP)

setup: $(STAMP)

chat: setup
	$(VENV)/bin/llmedge chat

serve: setup
	$(VENV)/bin/llmedge serve

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(LITERT_STAMP)
	$(PY) -m pytest

bench: setup
	$(PY) scripts/bench_stream.py
