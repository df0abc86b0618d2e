# One-command entry points. `make demo` and `make test` set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo test test-slow test-faults bench clean-venv

$(BIN)/anygpt: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the build this machine size is tested with (CPU works; CUDA used when present)
	$(BIN)/pip install -q torch==2.14.1 torchaudio==2.11.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/anygpt

setup: $(BIN)/anygpt

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/anygpt demo --out runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

test-faults: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/faults

bench: setup
	$(BIN)/python bench/run_all

clean-venv:
	rm -rf $(VENV)
