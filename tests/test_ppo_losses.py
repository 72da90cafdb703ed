"""Loss aggregation, clip-higher and the rollout correction, against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from align.ppo.diagnostics import rollout_ratio_stats
from align.ppo.losses import LossAggregation, policy_loss, rollout_ratios

# Two sequences: 3 response tokens and 2 (the third column of row 1 is padding, its 9 ignored).
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 2 + 3 + 4 + 5) / 5),  # 3.0: every token weighs the same
        ("seq-mean-token-sum", ((1 + 2 + 3) + (4 + 5)) / 2),  # 7.5
        ("seq-mean-token-mean", ((1 + 2 + 3) / 3 + (4 + 5) / 2) / 2),  # (2 + 4.5) / 2 = 3.25
        ("seq-mean-token-sum-norm", (6 + 9) / (2 * 4)),  # Dr. GRPO, max_new_tokens 4: 1.875
    ],
)
def test_each_aggregation_gives_the_hand_computed_loss_whole_or_split(mode, expected):
    whole = LossAggregation(mode, tokens=5, sequences=2, max_new_tokens=4)
    assert whole(PER_TOKEN, MASK).item() == pytest.approx(expected)
    # Split into one sequence per micro-batch, each normalised by the global counts: the shares add up.
    shares = [whole(PER_TOKEN[i : i + 1], MASK[i : i + 1]).item() for i in (0, 1)]
    assert sum(shares) == pytest.approx(expected)
    # One sequence on each of two processes: each share doubled, and DDP's mean of the gradients
    # halves them again.
    ranks = LossAggregation(mode, tokens=5, sequences=2, max_new_tokens=4, processes=2)
    per_rank = [ranks(PER_TOKEN[i : i + 1], MASK[i : i + 1]).item() for i in (0, 1)]
    assert sum(per_rank) / 2 == pytest.approx(expected)


RATIOS = torch.tensor([[1.5, 0.5, 1.25, 0.7]])
ADVANTAGES = torch.tensor([[1.0, -1.0, 1.0, -1.0]])


def test_clip_higher_clips_positive_advantages_at_one_plus_eps_high():
    loss, info = policy_loss(RATIOS.log(), torch.zeros(1, 4), ADVANTAGES, torch.ones(1, 4), 0.2, 0.28)
    # token 0: ρ 1.5, A +1 -> min(1.5, 1.28) = 1.28, clipped at the high bound; loss -1.28
    # token 1: ρ 0.5, A -1 -> min(-0.5, -0.8) = -0.8, clipped at the low bound; loss 0.8
    # token 2: ρ 1.25, A +1 -> 1.25 < 1.28, not clipped (ε 0.2 would clip it at 1.2); loss -1.25
    # token 3: ρ 0.7, A -1 -> min(-0.7, -0.8) = -0.8, clipped low; loss 0.8
    assert loss.item() == pytest.approx((-1.28 + 0.8 - 1.25 + 0.8) / 4)
    assert info["clip_fraction"].item() == pytest.approx(3 / 4)
    assert info["clip_fraction/high"].item() == pytest.approx(1 / 4)
    assert info["clip_fraction/low"].item() == pytest.approx(2 / 4)
    assert info["clip_fraction/pos_adv"].item() == pytest.approx(1 / 2)
    assert info["clip_fraction/neg_adv"].item() == pytest.approx(2 / 2)


def test_symmetric_clip_range_is_the_default_of_both_bounds():
    loss, info = policy_loss(RATIOS.log(), torch.zeros(1, 4), ADVANTAGES, torch.ones(1, 4), 0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.2 + 0.8) / 4)
    assert info["clip_fraction/pos_adv"].item() == pytest.approx(1.0)


# Engine log-probs below or above the trainer's by known amounts: token ratios π_old/π_engine of
# 3, 1.5, 1 (row 0) and 0.25, 2.4 (row 1; its third column is padding with a garbage value).
TOKEN_RATIOS = torch.tensor([[3.0, 1.5, 1.0], [0.25, 2.4, 1.0]])
OLD = torch.log(torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 0.2]]))
ENGINE = OLD - TOKEN_RATIOS.log() + torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
CAP, FLOOR = 2.0, 0.5


@pytest.mark.parametrize(
    ("mode", "weights", "stats"),
    [
        (
            "token_tis",
            [[2.0, 1.5, 1.0], [0.25, 2.0, 0.0]],  # min(ρ, 2)
            {
                "ratio_mean": (3 + 1.5 + 1 + 0.25 + 2.4) / 5,
                "ratio_min": 0.25,
                "ratio_max": 3.0,
                "clipped_share": 2 / 5,
            },
        ),
        (
            "token_mask",
            [[0.0, 1.5, 1.0], [0.0, 0.0, 0.0]],  # ρ inside [0.5, 2], else 0
            {"ratio_mean": 8.15 / 5, "ratio_min": 0.25, "ratio_max": 3.0, "masked_share": 3 / 5},
        ),
        (
            "sequence_tis",  # sequence ratios 3 * 1.5 * 1 = 4.5 and 0.25 * 2.4 = 0.6
            [[2.0, 2.0, 2.0], [0.6, 0.6, 0.0]],
            {"ratio_mean": (4.5 + 0.6) / 2, "ratio_min": 0.6, "ratio_max": 4.5, "clipped_share": 1 / 2},
        ),
        (
            "sequence_mask",
            [[0.0, 0.0, 0.0], [0.6, 0.6, 0.0]],
            {"ratio_mean": 2.55, "ratio_min": 0.6, "ratio_max": 4.5, "masked_share": 1 / 2},
        ),
        (
            "none",
            [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]],
            {"ratio_mean": 8.15 / 5, "ratio_min": 0.25, "ratio_max": 3.0},
        ),
    ],
)
def test_rollout_correction_weights_and_logged_ratio_statistics(mode, weights, stats):
    ratios = rollout_ratios(OLD, ENGINE, MASK, mode, CAP, FLOOR)
    torch.testing.assert_close(ratios.weights, torch.tensor(weights), rtol=1e-5, atol=1e-6)
    logged = rollout_ratio_stats(ratios, mode, all_sum=lambda t: t, gather=lambda t: t)
    assert logged == pytest.approx({f"rollout_correction/{k}": v for k, v in stats.items()}, rel=1e-5)


def test_tis_weights_the_policy_loss_of_each_token():
    # On-policy (ρ = 1) with A = 1 the surrogate is -w per token: the token mean of -min(ρ_engine, 2).
    weights = rollout_ratios(OLD, ENGINE, MASK, "token_tis", CAP, FLOOR).weights
    loss, _ = policy_loss(OLD, OLD, torch.ones(2, 3), MASK, 0.2, weights=weights)
    assert loss.item() == pytest.approx(-(2 + 1.5 + 1 + 0.25 + 2) / 5)


def test_sequence_ratio_of_a_long_response_does_not_overflow():
    # 400 tokens at a log-ratio of 0.5 each: exp(200) is inf in float32; the weight is the cap.
    old, engine, mask = torch.zeros(1, 400), torch.full((1, 400), -0.5), torch.ones(1, 400)
    ratios = rollout_ratios(old, engine, mask, "sequence_tis", CAP, FLOOR)
    assert torch.isfinite(ratios.ratios).all() and ratios.ratios.item() == pytest.approx(
        math.exp(20), rel=1e-5
    )
    assert ratios.weights.unique().tolist() == [CAP]
