"""`align ppo` rejects inconsistent configs with a message that names the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from align.errors import ConfigError
from align.ppo.config import PPOConfig

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data/tasks/prompts_train.jsonl"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({}, "reward_model"),
        ({"reward_rule": "rule_reward", "advantage": "grpo", "samples_per_prompt": 1}, "samples_per_prompt"),
        ({"reward_rule": "rule_reward"}, "critic_init"),
        ({"reward_rule": "rule_reward", "critic_init": "policy", "engine": "server"}, "server_url"),
        (
            {
                "reward_rule": "rule_reward",
                "critic_init": "policy",
                "minibatch_size": 8,
                "micro_batch_size": 3,
            },
            "micro_batch_size",
        ),
        ({"reward_rule": "rule_reward", "critic_init": "policy", "eval_every": 5}, "eval_every"),
    ],
)
def test_inconsistent_configs_name_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        PPOConfig(policy=tmp_path, prompts=PROMPTS, output_dir=tmp_path / "out", **overrides)


def test_cli_exits_2_on_a_bad_value(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "align.cli",
            "ppo",
            "--policy",
            str(tmp_path),
            "--prompts",
            str(PROMPTS),
            "--output_dir",
            str(tmp_path / "out"),
            "--reward_rule",
            "rule_reward",
            "--critic_init",
            "policy",
            "--clip_range",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "clip_range" in result.stderr
