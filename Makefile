# Everything runs from a local virtualenv that `make setup` builds once (and again when
# pyproject.toml changes). The first build compiles llama-cpp-python (a few minutes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The test suite's TFLite interpreter: every test has its own LLMEDGE_HOME, so the environment
# llmedge makes there on first use (vision/litert_env.py) is made once here and shared instead.
LITERT_VENV ?= .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.installed

LLAMA_CPP := $(shell sed -n 's/.*"\(llama-cpp-python==[0-9.]*\)".*/\1/p' pyproject.toml)
# llama.cpp is compiled for this machine's CPU, without AMX: some virtual machines report AMX but
# fault on its first tile instruction. Built here, not taken from pip's cache, whose wheel may have
# been compiled for another CPU.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
endif

.PHONY: setup chat serve test lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir --no-binary llama-cpp-python '$(LLAMA_CPP)'
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

# TFLite conversion in the tests only: litert-torch cannot share a virtualenv with pydantic 2.12+.
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
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: lint $(LITERT_STAMP)
	LLMEDGE_LITERT_PYTHON=$${LLMEDGE_LITERT_PYTHON:-$(abspath $(LITERT_VENV))/bin/python} $(PY) -m pytest

bench: setup
	$(PY) scripts/bench_stream.py
