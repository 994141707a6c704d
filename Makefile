# Everything runs from a local virtualenv that `make setup` builds once (and again when
# pyproject.toml changes). The first build compiles llama-cpp-python (a few minutes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup chat serve test lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

chat: setup
	$(VENV)/bin/llmedge chat

serve: setup
	$(VENV)/bin/llmedge serve

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

bench: setup
	$(PY) scripts/bench_stream.py
