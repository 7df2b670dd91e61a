# The two commands a newcomer needs (see README):
#   make ask Q="Can I use the council logo on my website?"   set up, build the index on first use, answer
#   make test                                                 set up and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra pip arguments for torch. Empty here (this machine's pip finds the CPU wheel); the Dockerfile passes
# the official CPU wheel index so no CUDA build is ever pulled.
TORCH_PIP_ARGS ?=
Q ?= Can I use the council logo on my website?
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup ask test lint index bench bench-quality eval clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

ask: setup
	$(BIN)/policybot ask "$(Q)"

index: setup
	$(BIN)/policybot index

test: setup
	$(BIN)/ruff check bot index tests
	$(BIN)/python -m pytest -q

eval: setup
	$(BIN)/policybot eval tests/gold/seed_gold.jsonl

bench: setup
	$(BIN)/policybot bench

bench-quality: setup
	$(BIN)/policybot bench-quality

clean:
	rm -rf var .pytest_cache
