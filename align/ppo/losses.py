"""All PPO losses in one file: clipped surrogate (with DAPO's clip-higher), clipped value loss, KL
terms, the rollout correction for the engine/trainer mismatch (truncated importance sampling and
its masked variants) and the loss aggregations over the global batch. The entropy bonus's
per-token entropy comes with the log-probs (`experience.log_probs_and_entropy`).

Every loss is a per-token term turned into one number by an `aggregate(per_token, mask)` callable:
`masked_mean` (the mean over the given tokens) by default, or a `LossAggregation`, which gives a
micro-batch its exact share of the loss of the whole minibatch across micro-batches and processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from align.ppo.advantages import masked_mean

Aggregate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MAX_LOG_RATIO = 20.0
"""Sequence log-ratios are sums over many tokens; exp() of one past this overflows float32."""


@dataclass(frozen=True)
class LossAggregation:
    """One micro-batch's share of a minibatch loss, aggregated over the GLOBAL minibatch.

    `tokens` and `sequences` count the whole minibatch over every micro-batch and process, so the
    shares of all micro-batches add up to the loss of the minibatch as one batch, however it is split
    (TRL #3021 averaged per-micro-batch means instead). Each process's share is multiplied by the
    number of processes because DDP averages their gradients.
    """

    mode: str
    """`token-mean`, `seq-mean-token-sum`, `seq-mean-token-mean` or `seq-mean-token-sum-norm`
    (`PPOConfig.loss_aggregation`)."""
    tokens: float
    """Response tokens in the minibatch, all processes."""
    sequences: float
    """Sequences in the minibatch, all processes."""
    max_new_tokens: int
    """Dr. GRPO's constant per-sequence normaliser."""
    processes: int = 1

    def __call__(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        token_sums = (per_token * mask).sum(1)
        if self.mode == "seq-mean-token-mean":
            total = (token_sums / mask.sum(1).clamp(min=1)).sum()
        else:
            total = token_sums.sum()
        count = {
            "token-mean": self.tokens,
            "seq-mean-token-sum": self.sequences,
            "seq-mean-token-mean": self.sequences,
            "seq-mean-token-sum-norm": self.sequences * self.max_new_tokens,
        }[self.mode]
        return total * self.processes / max(count, 1.0)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    clip_range_high: float | None = None,
    weights: torch.Tensor | None = None,
    aggregate: Aggregate = masked_mean,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A)·w, aggregated by `aggregate`.

    `clip_range` is ε_low and, unless `clip_range_high` is given, ε_high (DAPO's clip-higher raises
    only ε_high so unlikely tokens can gain probability). `weights`: the rollout correction's per-token
    weights w (`rollout_correction_weights`; 1 without). Info: token means over `mask` of the clip
    fractions (all tokens; at each bound, which is where a clip can bind: the high one only for A > 0,
    the low one only for A < 0; and within the tokens of each advantage sign) and approximate KL.
    """
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + high) * advantages
    per_token = -torch.min(unclipped, clipped)
    if weights is not None:
        per_token = per_token * weights
    loss = aggregate(per_token, mask)
    with torch.no_grad():
        is_clipped = (unclipped > clipped).float()
        positive, negative = mask * (advantages > 0), mask * (advantages < 0)
        info = {
            "clip_fraction": masked_mean(is_clipped, mask),
            "clip_fraction/high": masked_mean(is_clipped * (advantages > 0), mask),
            "clip_fraction/low": masked_mean(is_clipped * (advantages < 0), mask),
            "clip_fraction/pos_adv": masked_mean(is_clipped, positive),
            "clip_fraction/neg_adv": masked_mean(is_clipped, negative),
            # k3 estimator of KL(old‖new): unbiased and never negative (Schulman, "Approximating KL").
            "approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
        }
    return loss, info


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    aggregate: Aggregate = masked_mean,
) -> torch.Tensor:
    """½·max((V - R)², (clip(V, V_old ± ε) - R)²): the critic may not move far from its old values."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * aggregate(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log π(a|s) - log π_ref(a|s) (k1) of the sampled tokens."""
    return logprobs - ref_logprobs


def kl_loss_term(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref), π_ref/π - log(π_ref/π) - 1: never negative, with a
    gradient; the KL term GRPO (Shao et al. 2024) adds to the loss instead of the reward."""
    log_ratio = ref_logprobs - logprobs
    return log_ratio.exp() - log_ratio - 1


@dataclass
class RolloutRatios:
    """The trainer/engine ratios π_trainer_old/π_engine of a batch and what the correction makes of them."""

    ratios: torch.Tensor
    """[B, R] per token, or [B, 1] per sequence (exp of the summed token log-ratios)."""
    mask: torch.Tensor
    """Which entries of `ratios` are real: the response mask, or 1 per sequence."""
    weights: torch.Tensor
    """[B, R] the per-token weight of the policy loss."""
    corrected: torch.Tensor
    """Like `ratios`: 1 where the correction truncated (TIS) or dropped (mask) the ratio."""


def rollout_ratios(
    old_logprobs: torch.Tensor,
    engine_logprobs: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    cap: float,
    floor: float,
) -> RolloutRatios:
    """Importance weights for sampling with the engine while training the trainer's policy.

    The engine (vLLM, often bf16 or another kernel) samples from π_engine, not from the trainer's
    π_old, so the policy gradient is off-policy by ρ = π_old/π_engine. `token_tis`: w = min(ρ_t, cap)
    per token (truncated importance sampling, Yao et al. 2025; TRL's `token_truncate`);
    `sequence_tis`: ρ = exp(Σ_t log ρ_t) of the whole response, min(ρ, cap) on all its tokens;
    `token_mask` / `sequence_mask`: w = ρ inside [floor, cap] and 0 outside (IcePop; TRL's `*_mask`),
    the dropped tokens still counting in the loss normaliser as in TRL and OpenRLHF. `none`: w = 1.
    """
    log_ratio = (old_logprobs - engine_logprobs) * mask
    per_sequence = mode.startswith("sequence")
    if per_sequence:
        log_ratio = log_ratio.sum(1, keepdim=True)
        entries = torch.ones_like(log_ratio)
    else:
        entries = mask
    ratios = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
    if mode.endswith("tis"):
        corrected = ratios > cap
        weights = ratios.clamp(max=cap)
    elif mode.endswith("mask"):
        corrected = (ratios < floor) | (ratios > cap)
        weights = ratios.masked_fill(corrected, 0.0)
    else:
        corrected = torch.zeros_like(ratios, dtype=torch.bool)
        weights = torch.ones_like(ratios)
    return RolloutRatios(ratios, entries, weights.expand_as(mask) * mask, corrected.float() * entries)
