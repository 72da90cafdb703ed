#!/usr/bin/env bash
# The GPU check (scripts/gpu/check.py says what it measures). On the GPU machine, with the wheels of
# scripts/gpu/fetch_wheels.sh carried in scripts/gpu/wheels, inside one call of at most 8 minutes:
#   bash scripts/gpu/check.sh --compile                      # writes $OUT/gpu.json and $OUT/check.log
# Here, on the CPU, tiny sizes, no wheels (tests/test_gpu_check.py runs this):
#   bash scripts/gpu/check.sh --smoke --compile --out /tmp/gpu-check
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

python=${PYTHON:-python3}
if [[ -z ${PYTHON:-} && -x .venv/bin/python ]]; then
    python=.venv/bin/python # here; the GPU machine has no .venv and its own python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

wheels=scripts/gpu/wheels
if [[ " $* " != *" --smoke "* ]] && compgen -G "$wheels/*.whl" >/dev/null; then
    # TRL, datasets and what they need that the GPU image lacks, into a folder first on the path.
    # --no-deps: with --target pip ignores what is installed and would look for torch and the rest here.
    site=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl; then
        export PYTHONPATH="$site:$PYTHONPATH"
    else
        echo "check.sh: installing $wheels failed; the steps that need TRL or datasets will fail" >&2
    fi
fi
exec "$python" -u scripts/gpu/check.py "$@"
