"""The RL loop's shortcuts compute what the long way computes: trimmed micro-batches, the old
log-probs taken from an on-policy first pass, a LoRA reference that is the policy with its adapter
off, and GRPO's k3 KL term of the loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from align.ppo.experience import (
    Experience,
    RewardSource,
    length_sorted_chunks,
    make_experience,
    token_logprobs,
)
from align.ppo.losses import kl_loss_term
from rollouts.base import Rollout


def rollout(prompt: list[int], response: list[int]) -> Rollout:
    return Rollout(
        prompt_index=0,
        prompt_token_ids=prompt,
        token_ids=response,
        text="",
        logprobs=None,
        finish_reason="stop",
    )


ROLLOUTS = [
    rollout([5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15]),
    rollout([5, 6], [10]),
    rollout([7, 8, 9], [11, 12, 13]),
    rollout([5], [12, 14]),
]


class ConstantReward(RewardSource):
    def __init__(self):
        self.model, self.rule = None, None

    def __call__(self, texts, records):
        return torch.ones(len(texts))


def test_kl_loss_term_is_k3_worked_by_hand():
    logprobs = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.2)])
    # ratio π_ref/π = 0.5 -> 0.5 - log 0.5 - 1 = 0.19315; equal probabilities -> 0.
    assert kl_loss_term(logprobs, ref).tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])


def test_select_trims_the_columns_every_selected_row_pads(tiny_model_dir: Path):
    from align.ppo.experience import pad_rollouts

    ids, attn, resp = pad_rollouts(ROLLOUTS, pad_id=0)
    full = Experience(ids, attn, resp, resp.clone(), resp.clone(), torch.zeros(4), resp.clone())
    assert ids.shape == (4, 5 + 6)
    short = full.select(torch.tensor([1, 3]))  # prompts of 2 and 1 tokens, responses of 1 and 2
    assert short.input_ids.tolist() == [[5, 6, 10, 0], [0, 5, 12, 14]]
    assert short.response_mask.tolist() == [[1, 0], [1, 1]]
    assert short.prompt_width == 2
    chunks = length_sorted_chunks(attn, 2)
    assert [c.tolist() for c in chunks] == [[0, 2], [1, 3]]  # lengths 11, 6 | 3, 3 (ties keep order)


def test_trimmed_length_sorted_scoring_equals_one_padded_batch(tiny_model_dir: Path):
    from align.models import load_model
    from align.ppo.experience import pad_rollouts

    model = load_model(tiny_model_dir).eval()
    experience = make_experience(
        ROLLOUTS, [{}] * 4, model, model, None, ConstantReward(), 0, 1.0, 2, torch.device("cpu")
    )
    ids, attn, resp = pad_rollouts(ROLLOUTS, pad_id=0)
    with torch.no_grad():
        # One padded batch, the LM head over every position (no `logits_to_keep`).
        logits = model(
            input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)
        ).logits
        whole = token_logprobs(logits[:, -7:-1], ids[:, -6:]) * resp
    torch.testing.assert_close(experience.old_logprobs, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(experience.ref_logprobs, whole, atol=1e-5, rtol=1e-5)


def test_lora_reference_is_the_base_model(tiny_model_dir: Path):
    from peft import LoraConfig, get_peft_model

    from align.models import load_model

    base = load_model(tiny_model_dir).eval()
    policy = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_()
    policy.eval()
    shared = make_experience(
        ROLLOUTS, [{}] * 4, policy, None, None, ConstantReward(), 0, 1.0, 4, torch.device("cpu")
    )
    separate = make_experience(
        ROLLOUTS, [{}] * 4, policy, base, None, ConstantReward(), 0, 1.0, 4, torch.device("cpu")
    )
    torch.testing.assert_close(shared.ref_logprobs, separate.ref_logprobs, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(shared.old_logprobs, shared.ref_logprobs)


def test_on_policy_first_pass_gives_the_old_logprobs_a_scoring_pass_gives(tiny_model_dir: Path):
    from accelerate import Accelerator

    from align.models import load_model
    from align.ppo.config import PPOConfig
    from align.ppo.iteration import compute_advantages, single_on_policy_step, train_on

    config = PPOConfig(
        policy=tiny_model_dir,
        output_dir=Path("unused"),
        prompts=Path(__file__),
        reward_rule="is_correct",
        advantage="rloo",
        samples_per_prompt=2,
        kl_penalty="loss",
        ppo_epochs=1,
        minibatch_size=4,
        micro_batch_size=2,
    )
    assert single_on_policy_step(config, rollouts=4)
    assert not single_on_policy_step(config, rollouts=8)
    model = load_model(tiny_model_dir)
    scored = make_experience(ROLLOUTS, [{}] * 4, model, model, None, ConstantReward(), 0, 1.0, 2, "cpu")
    skipped = make_experience(
        ROLLOUTS, [{}] * 4, model, model, None, ConstantReward(), 0, 1.0, 2, "cpu", old_logprobs=False
    )
    assert not skipped.old_logprobs.any()
    compute_advantages(skipped, 0.1, config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_on(skipped, model, None, [optimizer], Accelerator(cpu=True), config, 0.1, True)
    torch.testing.assert_close(skipped.old_logprobs, scored.old_logprobs, atol=1e-5, rtol=1e-5)
    assert stats["clip_fraction"] == 0.0
    assert stats["kl_loss"] == pytest.approx(0.0, abs=1e-6)  # the policy is its own reference here
