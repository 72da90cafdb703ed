"""The reward model: a new scalar head on the SFT backbone, trained, evaluated, resumed, reloaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_reward_model_replaces_the_lm_head_with_a_scalar_head(tiny_model_dir: Path) -> None:
    from align.models import load_model, load_tokenizer
    from rewards import score
    from rewards.model import build_reward_model

    rm, lm = build_reward_model(tiny_model_dir), load_model(tiny_model_dir)
    assert rm.score.out_features == 1
    assert (rm.model.layers[0].mlp.up_proj.weight == lm.model.layers[0].mlp.up_proj.weight).all()
    conversation = [
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "1 + 1 = 2."},
    ]
    rewards = score(rm, load_tokenizer(tiny_model_dir), [conversation, conversation[:1], conversation])
    assert len(rewards) == 3 and rewards[0] == pytest.approx(rewards[2], abs=1e-5)


@pytest.mark.slow
def test_two_runs_of_one_config_train_the_same_reward_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from rewards.reward_config import RewardStageConfig
    from rewards.train import run_reward_training

    lines = (REPO / "data/tasks/preferences.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "prefs.jsonl").write_text("".join(lines[:32]), encoding="utf-8")
    heads = []
    for run in ("a", "b"):
        torch.manual_seed(len(run) + ord(run))  # whatever the caller's generator holds
        out = run_reward_training(
            RewardStageConfig(
                model=tiny_model_dir,
                train_file=tmp_path / "prefs.jsonl",
                output_dir=tmp_path / run,
                max_length=128,
                truncate=True,
                batch_size=8,
                max_steps=1,
            )
        )
        heads.append(load_file(out / "model.safetensors")["score.weight"])
    assert torch.equal(heads[0], heads[1])


@pytest.mark.slow
def test_lora_reward_model_resumes_reports_per_criterion_and_reloads(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from align.models import load_tokenizer
    from rewards.model import load_reward_model
    from rewards.reward_config import RewardStageConfig
    from rewards.train import pairwise_accuracy, preference_splits, run_reward_training

    lines = (REPO / "data/tasks/preferences.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "prefs.jsonl").write_text("".join(lines[:96]), encoding="utf-8")

    def config(max_steps: int) -> RewardStageConfig:
        return RewardStageConfig(
            model=tiny_model_dir,
            train_file=tmp_path / "prefs.jsonl",
            output_dir=tmp_path / "rm",
            eval_fraction=0.25,
            max_length=128,
            truncate=True,
            batch_size=8,
            max_steps=max_steps,
            save_steps=2,
            eval_steps=2,
            lora=True,
        )

    run_reward_training(config(2))
    with caplog.at_level(logging.INFO):
        out = run_reward_training(config(4))
    assert "resuming from" in caplog.text and (out / "checkpoints" / "checkpoint-4").is_dir()
    metrics = json.loads((out / "rm_metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"overall", "helpful", "harmless", "honest"}
    assert metrics["eval_pairs"] == 24
    # The saved adapter (with its new head) scores the held-out pairs exactly as at the end of training.
    _, held_out = preference_splits(config(4))
    reloaded = pairwise_accuracy(load_reward_model(out), load_tokenizer(out), held_out)
    assert reloaded == metrics["accuracy"]
