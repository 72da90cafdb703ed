# The two commands of the README. Both install into .venv/ first (quick when already done).
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: demo test setup

setup:
	bash scripts/setup.sh

# The end-to-end demo pipeline on bundled data; re-running skips finished stages. The raw corpus
# is assembled once from Debian's fortune packages (unpacked, not installed; cached in data/cache/).
demo: setup
	$(VENV)/python data/fortunes/build.py
	$(VENV)/python -m align.cli pipeline --config scripts/recipes/demo.yaml

# Lint, then the whole test suite (`pytest -m "not slow"` for the quick part).
test:
	bash scripts/setup.sh --test-tools
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/python -m pytest
