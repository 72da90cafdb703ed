"""Acceptance: on the demo task, PPO (with a critic) and a critic-free variant (RLOO) raise the mean
reward-model score of fresh samples above the SFT model's, keep the KL to the reference under the
configured bound, and improve rule-judged correctness on held-out prompts.

The SFT model and the reward model are trained here on the bundled task data, on the tiny preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.ppo.config import PPOConfig
from align.ppo.evaluate import sample_quality
from align.ppo.loop import run_ppo

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "data/tasks"
EVAL = dict(
    prompts=TASKS / "prompts_eval.jsonl", limit=64, max_new_tokens=24, temperature=0.5, samples_per_prompt=2
)
KL_BOUND = 4.0


@pytest.fixture(scope="module")
def sft_and_rm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from align.sft import run_sft
    from align.sft_config import SFTStageConfig
    from rewards.reward_config import RewardStageConfig
    from rewards.train import run_reward_training

    root = tmp_path_factory.mktemp("ppo-demo")
    sft = run_sft(
        SFTStageConfig(
            model=tiny_model_dir,
            train_file=TASKS / "sft_train.jsonl",
            output_dir=root / "sft",
            max_length=256,
            batch_size=8,
            max_steps=100,
            learning_rate=1e-3,
            eval_steps=1000,
            save_steps=1000,
        )
    )
    rm = run_reward_training(
        RewardStageConfig(
            model=sft,
            train_file=TASKS / "preferences.jsonl",
            output_dir=root / "rm",
            max_length=256,
            batch_size=16,
            max_steps=85,
            learning_rate=1e-3,
            eval_steps=1000,
            save_steps=1000,
        )
    )
    return Path(sft), Path(rm)


# An acceptance run (about 10 minutes on two cores), outside the default suite: run it with
# `pytest -m acceptance tests/test_ppo_improves.py`. It does not pass yet on the tiny preset; the
# last run measured gae 2.31 -> 2.25 RM reward and correctness 0.44 -> 0.41, rloo 2.31 -> 2.29 and
# 0.44 -> 0.27 after 12 iterations.
@pytest.mark.slow
@pytest.mark.acceptance
@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_beats_sft_on_reward_and_correctness_within_the_kl_bound(
    advantage, sft_and_rm, tmp_path, vllm_engine
):
    sft, rm = sft_and_rm
    before = sample_quality(sft, reward_model=rm, engine=vllm_engine, **EVAL)
    config = PPOConfig(
        policy=sft,
        reward_model=rm,
        prompts=TASKS / "prompts_train.jsonl",
        output_dir=tmp_path / advantage,
        advantage=advantage,
        iterations=12,
        prompts_per_iteration=16,
        samples_per_prompt=4 if advantage == "rloo" else 2,
        max_new_tokens=24,
        temperature=0.5,
        minibatch_size=32,
        micro_batch_size=32,
        learning_rate=1e-4,
        critic_learning_rate=1e-3,
        kl_coef=0.02,
        kl_bound=KL_BOUND,
        save_every=0,
        report_to=["none"],
    )
    policy = run_ppo(config, engine=vllm_engine)
    after = sample_quality(policy, reward_model=rm, engine=vllm_engine, **EVAL)
    rows = [json.loads(line) for line in (tmp_path / advantage / "metrics.jsonl").read_text().splitlines()]
    print(f"{advantage}: SFT {before} -> PPO {after}; KL per iteration {[round(r['kl'], 2) for r in rows]}")
    assert after["reward_mean"] > before["reward_mean"] + 0.05
    assert after["correct"] > before["correct"]
    assert max(r["kl"] for r in rows[-3:]) < KL_BOUND
    assert (tmp_path / advantage / "curves.png").stat().st_size > 0
