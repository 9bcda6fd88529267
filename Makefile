# The README's two commands:  `make run` (main job on the default model)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKBENCH_DATA_DIR ?= $(abspath ../shared/datasets)
export WORKBENCH_DATA_DIR
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
RUN_DIR ?= runs/default

.PHONY: setup run test lint clean

setup: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build that installs from local disk here (a bare `torch` pulls CUDA).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,notebooks]'
	touch $(STAMP)

run: setup
	$(BIN)/workbench run --model smollm2-135m-safety --run $(RUN_DIR) --lam 1.0 0.6 0.2 0.0

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check workbench tests benchmarks

clean:
	rm -rf $(VENV) runs
