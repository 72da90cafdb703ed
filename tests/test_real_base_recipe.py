"""The real-base recipe (scripts/recipes/smollm2.yaml) at smoke size: every stage after import-base
runs through the public CLI on a tiny model, and each section of the full recipe validates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import stage_parts
from align.pipeline import PipelineConfig, planned_stages
from rewards.constraints import CONSTRAINT_TYPES

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "scripts/recipes/smollm2.yaml"


@pytest.fixture(scope="module")
def real_base_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("smollm2-tiny")
    shutil.copytree(tiny_model_dir, run_dir / "base")
    command = [sys.executable, "-m", "align.cli", "pipeline", "--config", "scripts/recipes/smollm2_tiny.yaml"]
    result = subprocess.run(
        [*command, "--run_dir", str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


@pytest.mark.slow
def test_labels_reward_model_and_both_rl_runs_come_out_of_the_recipe(real_base_run: Path):
    pairs = [json.loads(line) for line in (real_base_run / "preferences.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert "accuracy" in json.dumps(json.loads((real_base_run / "rm" / "rm_metrics.json").read_text()))
    for run in ("rlvr", "rlvr-strict", "rlhf"):
        quality = json.loads((real_base_run / run / "quality.json").read_text())
        assert quality["policy"]["judged"] == quality["policy"]["samples"] > 0
        assert set(quality["policy"]["correct_by_kind"]) <= set(CONSTRAINT_TYPES)
        assert (real_base_run / run / "policy" / "config.json").is_file()
    rlhf = [json.loads(line) for line in (real_base_run / "rlhf" / "metrics.jsonl").read_text().splitlines()]
    # The RM's score and the checkers' rate, side by side at every iteration (eval_every: 1).
    assert all("eval/reward_mean" in row and "eval/correct" in row for row in rlhf)
    report = (real_base_run / "eval" / "report.md").read_text()
    assert "Instructions" in report and "rlvr" in report and "rlhf" in report


@pytest.mark.slow
def test_every_section_of_the_full_recipe_validates(real_base_run: Path, tmp_path: Path):
    _, stages = planned_stages(PipelineConfig(recipe=RECIPE))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for stage in stages:
        path, section = stage_parts(stage)
        extra = ["--gguf_file", str(gguf)] if path == ["import-base"] else []
        result = subprocess.run(
            [sys.executable, "-m", "align.cli", *path, "--config", str(RECIPE), "--section", section]
            + ["--run_dir", str(real_base_run), "--check_config", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
