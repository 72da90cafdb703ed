"""The RL-step benchmark (ours vs TRL's GRPOTrainer) runs end to end and reports its RESULT line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KEYS = ("trl_ratio", "tokens_per_s", "generation_share", "training_share")


@pytest.mark.slow
def test_rl_step_smoke_reports_positive_ratio_throughput_and_shares():
    # Run directly, as documented (`python scripts/bench/rl_step.py`).
    result = subprocess.run(
        [sys.executable, "scripts/bench/rl_step.py", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), result.stdout[-2000:]
    values = dict(pair.split("=") for pair in last.removeprefix("RESULT ").split())
    assert tuple(values) == KEYS
    numbers = {key: float(value) for key, value in values.items()}
    assert all(value > 0 for value in numbers.values()), numbers
    assert numbers["generation_share"] + numbers["training_share"] < 1
