"""Advantage estimators side by side: GAE (with a critic) and the critic-free GRPO, RLOO, REINFORCE++.

Every estimator sees the same inputs and returns `(advantages, returns)`, both [batch, tokens]:
- `token_rewards`: the per-token reward, i.e. -β·KL(policy‖reference) at every response token;
- `scores`: one scalar score per sequence (reward model and/or rule), added at the last token;
- `values`: the critic's values (only GAE reads them);
- `mask`: 1 on response tokens; `group_size`: completions per prompt, adjacent in the batch.
`config.advantage` picks one from `ESTIMATORS`, the one list of them (the config validates against
it, so this module imports no torch: it only calls methods of the tensors it is given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Estimator:
    """One advantage estimator and what it needs from the run."""

    compute: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    needs_critic: bool = False
    """Reads the critic's values (PPO proper)."""
    needs_groups: bool = False
    """Compares the completions of one prompt with each other (samples_per_prompt >= 2)."""
    kl_penalty: str = "reward"
    """Where the KL to the reference goes unless the config says (`PPOConfig.kl_penalty`)."""
    whiten_advantages: bool = True
    """Whether advantages are whitened over the batch unless the config says."""
    loss_aggregation: str = "token-mean"
    """How per-token losses are aggregated unless the config says (`losses.LOSS_AGGREGATIONS`)."""


ESTIMATORS: dict[str, Estimator] = {}


def register(name: str, needs_critic: bool = False, needs_groups: bool = False, **defaults) -> Callable:
    def add(fn: Callable) -> Callable:
        ESTIMATORS[name] = Estimator(fn, needs_critic, needs_groups, **defaults)
        return fn

    return add


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Zero mean (unless `shift_mean` is False) and unit variance over the masked entries; over
    every process's entries when `all_sum` sums a tensor across processes."""
    total = all_sum or (lambda t: t)
    count = total(mask.sum()).clamp(min=1)
    mean = total((x * mask).sum()) / count
    var = total(((x - mean) ** 2 * mask).sum()) / count
    out = (x - mean) * (var + 1e-8).rsqrt()
    if not shift_mean:
        out = out + mean
    return out * mask


def add_scores(token_rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards with each sequence's score added at its last response token."""
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()
    return token_rewards + last * scores[:, None]


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + γ·G_{t+1}, over the response tokens."""
    returns = rewards.new_zeros(rewards.shape)
    running = rewards.new_zeros(rewards.shape[:1])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


@register("gae", needs_critic=True)
def gae_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """Generalised advantage estimation: A_t = Σ (γλ)^k δ_{t+k}, δ_t = r_t + γV_{t+1} - V_t."""
    rewards = add_scores(token_rewards, scores, mask)
    values = values * mask
    advantages = rewards.new_zeros(rewards.shape)
    running = rewards.new_zeros(rewards.shape[:1])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else running.new_zeros(running.shape)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


@register("reinforce_pp")
def reinforce_pp_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """REINFORCE++: the discounted return of the KL-shaped reward (whitened over the batch later)."""
    returns = discounted_returns(add_scores(token_rewards, scores, mask), mask, gamma)
    return returns, returns


@register("rloo", needs_groups=True)
def rloo_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """RLOO: each score minus the mean score of the other completions of the same prompt."""
    grouped = scores.view(-1, group_size)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    returns = discounted_returns(add_scores(token_rewards, (grouped - baseline).view(-1), mask), mask, gamma)
    return returns, returns


# GRPO as DeepSeek defined it (Shao et al. 2024, eq. 3): the KL to the reference is a β·k3 term of
# the loss, each sequence's loss is the mean of its tokens', and the group-normalised advantages are
# used as they are. The variant with β·k1 folded into the rewards is `kl_penalty: reward`.
@register(
    "grpo",
    needs_groups=True,
    kl_penalty="loss",
    whiten_advantages=False,
    loss_aggregation="seq-mean-token-mean",
)
def grpo_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """GRPO: each score normalised by its prompt group's mean and standard deviation."""
    grouped = scores.view(-1, group_size)
    normalised = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)
    returns = discounted_returns(add_scores(token_rewards, normalised.view(-1), mask), mask, gamma)
    return returns, returns
