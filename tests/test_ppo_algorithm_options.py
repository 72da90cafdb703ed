"""The v0.2 PPO options: `advantage: grpo` alone is GRPO as DeepSeek defined it, the former
reward-folded variant stays one explicit option away, and every new option is validated at the door
and shown by `align ppo --help`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from align.errors import ConfigError
from align.ppo.config import PPOConfig

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data/tasks/prompts_train.jsonl"
NEW_OPTIONS = (
    "loss_aggregation",
    "clip_range_low",
    "clip_range_high",
    "rollout_correction",
    "rollout_correction_cap",
    "rollout_correction_floor",
    "dynamic_sampling",
    "dynamic_sampling_max_draws",
    "overlong_buffer",
    "overlong_penalty_factor",
    "sample_log_every",
    "sample_log_count",
)


def config(tmp_path: Path, **overrides) -> PPOConfig:
    return PPOConfig(
        policy=tmp_path, prompts=PROMPTS, output_dir=tmp_path / "out", reward_rule="is_correct", **overrides
    )


def test_grpo_defaults_are_deepseeks_and_the_reward_folded_variant_is_explicit(tmp_path):
    grpo = config(tmp_path, advantage="grpo")
    assert (grpo.kl_penalty, grpo.whiten_advantages, grpo.loss_aggregation) == (
        "loss",
        False,
        "seq-mean-token-mean",
    )
    folded = config(tmp_path, advantage="grpo", kl_penalty="reward", whiten_advantages=True)
    assert (folded.kl_penalty, folded.whiten_advantages, folded.loss_aggregation) == (
        "reward",
        True,
        "seq-mean-token-mean",
    )
    for advantage in ("rloo", "reinforce_pp"):
        other = config(tmp_path, advantage=advantage)
        assert (other.kl_penalty, other.whiten_advantages, other.loss_aggregation) == (
            "reward",
            True,
            "token-mean",
        )
    dapo = config(tmp_path, advantage="grpo", loss_aggregation="token-mean", clip_range_high=0.28)
    assert (dapo.loss_aggregation, dapo.clip_range, dapo.clip_range_high) == ("token-mean", 0.2, 0.28)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"advantage": "rloo", "loss_aggregation": "sum"}, "loss_aggregation"),
        ({"advantage": "rloo", "rollout_correction": "tis"}, "rollout_correction"),
        ({"advantage": "rloo", "rollout_correction_cap": 1.0}, "rollout_correction_cap"),
        ({"advantage": "rloo", "rollout_correction_floor": 1.0}, "rollout_correction_floor"),
        ({"advantage": "rloo", "clip_range_high": -0.1}, "clip_range_high"),
        ({"advantage": "rloo", "clip_range_low": 1.5}, "clip_range_low"),
        ({"advantage": "gae", "critic_init": "policy", "dynamic_sampling": True}, "dynamic_sampling"),
        ({"advantage": "rloo", "dynamic_sampling_max_draws": 0}, "dynamic_sampling_max_draws"),
        ({"advantage": "rloo", "max_new_tokens": 16, "overlong_buffer": 17}, "overlong_buffer"),
        ({"advantage": "rloo", "overlong_penalty_factor": -1.0}, "overlong_penalty_factor"),
        ({"advantage": "rloo", "sample_log_every": -1}, "sample_log_every"),
    ],
)
def test_bad_new_options_name_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        config(tmp_path, **overrides)


def test_ppo_help_shows_the_new_options():
    result = subprocess.run(
        [sys.executable, "-m", "align.cli", "ppo", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    for option in NEW_OPTIONS:
        assert re.search(rf"--{option} \[?VALUE", help_text), option  # a true/false flag: [VALUE]
    assert "one of 'none', 'token_tis', 'sequence_tis', 'token_mask', 'sequence_mask'" in help_text


def test_cli_check_config_prints_grpos_resolved_defaults(tmp_path):
    command = [sys.executable, "-m", "align.cli", "ppo", "--policy", str(tmp_path), "--prompts", str(PROMPTS)]
    command += ["--output_dir", str(tmp_path / "out"), "--reward_rule", "is_correct", "--advantage", "grpo"]
    result = subprocess.run([*command, "--check_config"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "kl_penalty: loss" in result.stdout and "loss_aggregation: seq-mean-token-mean" in result.stdout
    bad = subprocess.run([*command, "--rollout_correction", "tis"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "rollout_correction" in bad.stderr
