"""Two real processes under `accelerate launch` with the shipped two-process CPU config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_process_accelerate_run_trains_identical_replicas(tiny_model_dir, tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "scripts/accelerate/cpu_2proc.yaml"),
        str(REPO / "tests/scripts/ddp_train.py"), str(tiny_model_dir), str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = sorted(p.name for p in tmp_path.glob("rank*.safetensors"))
    assert ranks == ["rank0-of-2.safetensors", "rank1-of-2.safetensors"]
    first, second = (load_file(tmp_path / name) for name in ranks)
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["model.norm.weight"], initial["model.norm.weight"])
