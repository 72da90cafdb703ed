"""Advantage estimators and PPO losses, checked against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from align.ppo.advantages import ESTIMATORS, whiten
from align.ppo.losses import policy_loss, value_loss

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_gae_matches_the_recursion_worked_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = torch.tensor([1.0, 2.0])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 9.0]])
    advantages, returns = ESTIMATORS["gae"].compute(rewards, scores, values, MASK, 1, gamma=1.0, lam=0.5)
    # Row 0: deltas (0, 0, 0.5); A2 = .5, A1 = 0 + .5*.5 = .25, A0 = .125.
    assert advantages[0].tolist() == pytest.approx([0.125, 0.25, 0.5])
    # Row 1 ends at token 1 (its value 9 beyond the mask is ignored): deltas (0, 1).
    assert advantages[1].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert returns[1, :2].tolist() == pytest.approx([1.5, 2.0])


def test_gae_with_lambda_one_and_no_critic_is_the_return():
    rewards = torch.tensor([[-0.1, -0.1, -0.1], [-0.2, -0.2, 0.0]])
    advantages, _ = ESTIMATORS["gae"].compute(
        rewards, torch.tensor([1.0, 0.0]), torch.zeros(2, 3), MASK, 1, 1.0, 1.0
    )
    assert advantages[0].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert advantages[1].tolist() == pytest.approx([-0.4, -0.2, 0.0])


def test_rloo_subtracts_the_mean_of_the_other_samples():
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    mask = torch.ones(6, 1)
    advantages, _ = ESTIMATORS["rloo"].compute(torch.zeros(6, 1), scores, None, mask, 3, 1.0, 1.0)
    assert advantages[:, 0].tolist() == pytest.approx([1 - 4, 2 - 3.5, 6 - 1.5, -1.5, -1.5, 3.0])


def test_grpo_normalises_within_each_group():
    scores = torch.tensor([1.0, 3.0, 10.0, 10.0])
    advantages, _ = ESTIMATORS["grpo"].compute(torch.zeros(4, 1), scores, None, torch.ones(4, 1), 2, 1.0, 1.0)
    std = torch.tensor([1.0, 3.0]).std().item()
    assert advantages[:, 0].tolist() == pytest.approx([-1 / std, 1 / std, 0.0, 0.0], abs=1e-4)


def test_reinforce_pp_is_the_kl_shaped_return_to_go():
    rewards = torch.tensor([[-0.1, -0.2, -0.3]])
    advantages, _ = ESTIMATORS["reinforce_pp"].compute(
        rewards, torch.tensor([1.0]), None, torch.ones(1, 3), 1, 1.0, 1.0
    )
    assert advantages[0].tolist() == pytest.approx([0.4, 0.5, 0.7])


def test_whitening_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    out = whiten(x, MASK)
    kept = out[MASK.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert out[1, 2].item() == 0.0


def test_policy_loss_clips_the_ratio_and_counts_clipped_tokens():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.9]]))
    loss, info = policy_loss(new, old, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), clip_range=0.2)
    # Token 0: ratio 1.5 clipped to 1.2 (positive advantage); token 1: 0.9 unclipped.
    assert loss.item() == pytest.approx(-(1.2 + 0.9) / 2)
    assert info["clip_fraction"].item() == pytest.approx(0.5)
    assert info["approx_kl"].item() > 0


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old, new, target = torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.tensor([[1.0]])
    # Unclipped error 0; clipped value 0.2 -> error 0.64; the max is kept.
    assert value_loss(new, old, target, torch.ones(1, 1), 0.2).item() == pytest.approx(0.5 * 0.64)


def test_kl_controller_steers_beta_toward_the_target_both_ways_and_doubles_above_the_bound():
    from align.ppo.kl_controller import KLController

    controller = KLController(0.1, target=1.0, bound=4.0)
    assert controller.update(3.0) == pytest.approx(0.12)  # far above target: +20% at most
    assert controller.update(0.9) == pytest.approx(0.12 * 0.9)  # inside: eases off in proportion
    assert controller.update(0.0) == pytest.approx(0.12 * 0.9 * 0.8)
    assert controller.update(5.0) == pytest.approx(0.12 * 0.9 * 0.8 * 1.2 * 2)  # over the bound
    fixed = KLController(0.1, target=None, bound=4.0)
    assert fixed.update(3.9) == 0.1 and fixed.update(4.1) == 0.2
