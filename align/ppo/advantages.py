"""Advantage estimators side by side: GAE (with a critic) and the critic-free GRPO, RLOO, REINFORCE++.

Every estimator sees the same inputs and returns `(advantages, returns)`, both [batch, tokens]:
- `token_rewards`: the per-token reward, i.e. -β·KL(policy‖reference) at every response token;
- `scores`: one scalar score per sequence (reward model and/or rule), added at the last token;
- `values`: the critic's values (only GAE reads them);
- `mask`: 1 on response tokens; `group_size`: completions per prompt, adjacent in the batch.
`config.advantage` picks one from `ESTIMATORS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Estimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ESTIMATORS: dict[str, Estimator] = {}


def register(name: str) -> Callable[[Estimator], Estimator]:
    def add(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn

    return add


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean (unless `shift_mean` is False) and unit variance over the masked entries."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def add_scores(token_rewards: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards with each sequence's score added at its last response token."""
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()
    return token_rewards + last * scores[:, None]


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + γ·G_{t+1}, over the response tokens."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


@register("gae")
def gae_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """Generalised advantage estimation: A_t = Σ (γλ)^k δ_{t+k}, δ_t = r_t + γV_{t+1} - V_t."""
    rewards = add_scores(token_rewards, scores, mask)
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


@register("reinforce_pp")
def reinforce_pp_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """REINFORCE++: the discounted return of the KL-shaped reward (whitened over the batch later)."""
    returns = discounted_returns(add_scores(token_rewards, scores, mask), mask, gamma)
    return returns, returns


@register("rloo")
def rloo_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """RLOO: each score minus the mean score of the other completions of the same prompt."""
    grouped = scores.view(-1, group_size)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    returns = discounted_returns(add_scores(token_rewards, (grouped - baseline).view(-1), mask), mask, gamma)
    return returns, returns


@register("grpo")
def grpo_advantages(token_rewards, scores, values, mask, group_size, gamma, lam):
    """GRPO: each score normalised by its prompt group's mean and standard deviation."""
    grouped = scores.view(-1, group_size)
    normalised = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)
    returns = discounted_returns(add_scores(token_rewards, normalised.view(-1), mask), mask, gamma)
    return returns, returns
