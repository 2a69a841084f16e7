# One-command setup, quickstart and tests. Works on a fresh CPU machine and on CUDA machines:
# the local CPU torch wheel is installed only when the venv has no torch yet, so a CUDA torch
# (installed first, or via TORCH_SPEC) is never replaced.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: setup quickstart test lint bench-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

setup: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"

quickstart: setup
	$(BIN)/swiftkit run recipes/quickstart.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check swiftkit tests benchmarks

clean:
	rm -rf runs .pytest_cache
