"""The same recipe under the two-process CPU accelerate config: same global batch, same losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_run_matches_the_single_process_losses(pretrain_recipe, pretrain_baseline, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "scripts/accelerate/cpu_2proc.yaml"),
        "-m", "align.cli", "pretrain", "--config", str(pretrain_recipe(run)),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the single-process baseline (see run_align)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    single, double = losses(pretrain_baseline), losses(run)
    assert len(double) == len(single) == 10
    assert double == pytest.approx(single, rel=1e-4)
    assert (run / "final" / "model.safetensors").is_file()
