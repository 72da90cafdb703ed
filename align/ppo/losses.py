"""All PPO losses in one file: clipped surrogate, clipped value loss, KL terms (the entropy bonus's
per-token entropy comes with the log-probs, `experience.log_probs_and_entropy`)."""

from __future__ import annotations

import torch

from align.ppo.advantages import masked_mean


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate -min(ρA, clip(ρ, 1±ε)A), with its clip fraction and approximate KL."""
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((unclipped > clipped).float(), mask)
        # k3 estimator of KL(old‖new): unbiased and never negative (Schulman, "Approximating KL").
        approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return loss, {"clip_fraction": clip_fraction, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> torch.Tensor:
    """½·max((V - R)², (clip(V, V_old ± ε) - R)²): the critic may not move far from its old values."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate log π(a|s) - log π_ref(a|s) (k1) of the sampled tokens."""
    return logprobs - ref_logprobs


def kl_loss_term(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref), π_ref/π - log(π_ref/π) - 1: never negative, with a
    gradient; the KL term GRPO (Shao et al. 2024) adds to the loss instead of the reward."""
    log_ratio = ref_logprobs - logprobs
    return log_ratio.exp() - log_ratio - 1
