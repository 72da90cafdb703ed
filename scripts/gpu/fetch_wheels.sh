#!/usr/bin/env bash
# Download, here, the wheels that scripts/gpu/check.sh installs on the GPU machine, which reaches no
# package registry. That machine's image has torch, transformers, accelerate, peft, pyarrow, numpy,
# pandas, huggingface-hub and the rest of TRL's and datasets' needs, but not TRL, datasets, dill or
# multiprocess; fsspec comes too because datasets caps its version and the image's is not known.
# Each at the version installed in .venv, so the GPU runs what the tests here ran.
#   bash scripts/gpu/fetch_wheels.sh        # -> scripts/gpu/wheels/ (ignored by git; carry it)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
dest=scripts/gpu/wheels

specs=()
for name in trl datasets dill multiprocess fsspec; do
    version=$("$python" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name")
    specs+=("$name==$version")
done
rm -rf "$dest"
mkdir -p "$dest"
# --no-deps: the dependencies the GPU image already holds (torch above all) must not come along.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any -d "$dest" "${specs[@]}"
ls -1 "$dest"
du -sh "$dest"
