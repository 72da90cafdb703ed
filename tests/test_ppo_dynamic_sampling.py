"""DAPO's dynamic sampling and overlong penalty on real rollouts of the tiny model
(`transformers.generate` engine): groups whose samples all scored the same are dropped and the
batch is refilled from extra draws, and the iteration's metrics say how much was dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from align.ppo.experience import RewardSource
from align.ppo.sampling import draw_batch, equal_score_groups, overlong_penalty

SAMPLES = 4


class HalfFlatReward(RewardSource):
    """A rule reward that is the same for every reply to a `flat` prompt (the group teaches
    nothing) and the reply's length in characters otherwise (the samples of a group differ)."""

    def __init__(self):
        self.model, self.rule, self.rule_weight = None, None, 1.0

    def components(self, texts, records):
        return {
            "rule": torch.tensor(
                [1.0 if r["flat"] else float(len(t)) for t, r in zip(texts, records, strict=True)]
            )
        }


def prompts_file(tmp_path: Path, flat: list[bool]) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"prompt": f"What is {i} + {i}?", "flat": f}) for i, f in enumerate(flat)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_run(tiny_model_dir: Path, tmp_path: Path, flat: list[bool], **settings):
    from accelerate import Accelerator

    from align.models import load_model, load_tokenizer
    from align.ppo.config import PPOConfig
    from align.ppo.iteration import PPORun
    from align.ppo.loop import build_state
    from align.ppo.prompts import encode_prompt, read_prompts
    from rollouts.hf_engine import HFEngine

    config = PPOConfig(
        policy=tiny_model_dir,
        prompts=prompts_file(tmp_path, flat),
        output_dir=tmp_path / "out",
        reward_rule="is_correct",  # replaced by HalfFlatReward below
        advantage="rloo",
        samples_per_prompt=SAMPLES,
        prompts_per_iteration=4,
        max_new_tokens=6,
        minibatch_size=16,
        micro_batch_size=8,
        ppo_epochs=1,
        report_to=["none"],
        **{"dynamic_sampling": True, **settings},
    )
    accelerator = Accelerator(cpu=True)
    tokenizer = load_tokenizer(tiny_model_dir)
    records = read_prompts(config.prompts)
    run = PPORun(
        config=config,
        accelerator=accelerator,
        engine=HFEngine(tiny_model_dir),
        tokenizer=tokenizer,
        records=records,
        prompt_ids=[encode_prompt(tokenizer, r, config.max_prompt_tokens) for r in records],
        reference=load_model(tiny_model_dir).eval(),
        reward=HalfFlatReward(),
    )
    return run, build_state(config, accelerator, tokenizer.pad_token_id)


def test_equal_score_groups_are_dropped_and_the_batch_refilled(tiny_model_dir, tmp_path):
    from align.ppo.iteration import ppo_iteration
    from align.ppo.prompts import prompt_batch

    flat = [i % 2 == 0 for i in range(12)]  # half the prompts give every sample the same reward
    run, state = make_run(tiny_model_dir, tmp_path, flat, dynamic_sampling_max_draws=6)
    batch = prompt_batch(0, 4, len(flat), seed=0)
    flat_in_batch = sum(flat[i] for i in batch)
    assert flat_in_batch > 0  # so the first draw is short and must be refilled

    drawn, counts = draw_batch(run, 0, batch)
    groups = drawn.groups(SAMPLES)
    assert len(groups) == 4 and counts.filled == 0  # full again
    assert not any(flat[g.prompts[0]] for g in groups)  # no flat prompt was kept
    assert not equal_score_groups(drawn.scores, SAMPLES).any()
    assert counts.draws >= 1 and counts.drawn == 4 * (1 + counts.draws)
    assert counts.dropped >= flat_in_batch and counts.zero_variance >= flat_in_batch
    # The first draw's groups of differing scores come first, in the batch's order.
    kept_first = [g.prompts[0] for g in groups[: 4 - counts.zero_variance]]
    assert kept_first == [i for i in batch if i in kept_first] and not any(flat[i] for i in kept_first)

    # The iteration draws the same (same weights, same seeds) and logs what it dropped.
    metrics = ppo_iteration(run, state)
    assert metrics["dynamic_sampling/dropped_share"] == pytest.approx(counts.dropped / counts.drawn)
    assert metrics["dynamic_sampling/filled_share"] == 0.0
    assert metrics["dynamic_sampling/draws"] == counts.draws
    assert metrics["zero_variance_groups"] == pytest.approx(counts.zero_variance / 4)
    assert metrics["reward/rule"] == pytest.approx(drawn.scores.mean().item())


def test_when_extra_draws_run_out_dropped_groups_fill_the_batch(tiny_model_dir, tmp_path):
    from align.ppo.iteration import ppo_iteration

    run, state = make_run(tiny_model_dir, tmp_path, [True] * 8, dynamic_sampling_max_draws=2)
    metrics = ppo_iteration(run, state)
    # 4 groups, then 2 extra draws of 4: all 12 dropped, 4 of them put back.
    assert metrics["dynamic_sampling/dropped_share"] == 1.0
    assert metrics["dynamic_sampling/filled_share"] == 1.0
    assert metrics["dynamic_sampling/draws"] == 2
    assert metrics["zero_variance_groups"] == 1.0


def test_overlong_penalty_is_dapos_linear_ramp_over_the_buffer():
    lengths = torch.tensor([10, 12, 13, 15, 16])
    # max_new_tokens 16, buffer 4: free up to 12 tokens, then -(L - 12)/4 x factor 0.5.
    assert overlong_penalty(lengths, 16, 4, 0.5).tolist() == pytest.approx([0.0, 0.0, -0.125, -0.375, -0.5])


def test_overlong_penalty_is_a_reward_component_of_the_score(tiny_model_dir, tmp_path):
    from align.ppo.sampling import score_rollouts

    run, _ = make_run(
        tiny_model_dir,
        tmp_path,
        [True] * 4,
        overlong_buffer=6,
        overlong_penalty_factor=2.0,
        dynamic_sampling=False,
    )
    drawn, _ = draw_batch(run, 0, [0, 1, 2, 3])
    lengths = torch.tensor([len(r.token_ids) for r in drawn.rollouts], dtype=torch.float32)
    # max_new_tokens 6 = buffer: the penalty is -2 x length / 6 for every sample.
    assert drawn.parts["overlong_penalty"].tolist() == pytest.approx((-2.0 * lengths / 6).tolist())
    assert drawn.scores.tolist() == pytest.approx((1.0 + drawn.parts["overlong_penalty"]).tolist())
    again = score_rollouts(run, drawn.rollouts, drawn.prompts)
    assert again.scores.tolist() == drawn.scores.tolist()
