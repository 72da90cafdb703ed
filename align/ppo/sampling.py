"""What an iteration trains on: its prompts' groups of samples, each sample's reward in parts (the
reward model's score, the rule's, DAPO's overlong penalty), and DAPO's dynamic sampling, which
drops the groups whose samples all scored the same and draws more prompts in their place.

A group whose samples all got one score gives a group estimator (GRPO, RLOO) zero advantages: it
costs a forward and backward pass and teaches nothing, and the more of the batch such groups are,
the smaller and noisier the gradient (DAPO, Yu et al. 2025, section 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from align.ppo.prompts import refill_batch
from rollouts.base import Rollout, Sampling

if TYPE_CHECKING:
    from align.ppo.iteration import PPORun

REFILL_SEED_OFFSET = 1_000_000_007
"""Extra draws seed their prompts far from any iteration's own seeds."""

EQUAL_SCORES = 1e-6
"""Scores of a group closer than this count as one score (a float RM never repeats itself exactly)."""


@dataclass
class ScoredRollouts:
    """Samples of whole prompt groups (adjacent), their prompts and their rewards."""

    rollouts: list[Rollout]
    prompts: list[int]
    """The record index of each sample's prompt."""
    parts: dict[str, torch.Tensor]
    """[N] each: `rm`, `rule` (unweighted), `overlong_penalty`, as the run has them."""
    scores: torch.Tensor
    """[N] the reward: RM score + rule_weight x rule score + overlong penalty."""

    def groups(self, size: int) -> list[ScoredRollouts]:
        """One `ScoredRollouts` per prompt group of `size` samples."""
        return [self.rows(range(start, start + size)) for start in range(0, len(self.rollouts), size)]

    def rows(self, rows: range) -> ScoredRollouts:
        return ScoredRollouts(
            [self.rollouts[i] for i in rows],
            [self.prompts[i] for i in rows],
            {k: v[rows.start : rows.stop] for k, v in self.parts.items()},
            self.scores[rows.start : rows.stop],
        )

    @staticmethod
    def concat(parts: list[ScoredRollouts]) -> ScoredRollouts:
        return ScoredRollouts(
            [r for p in parts for r in p.rollouts],
            [i for p in parts for i in p.prompts],
            {k: torch.cat([p.parts[k] for p in parts]) for k in parts[0].parts},
            torch.cat([p.scores for p in parts]),
        )


@dataclass
class DrawCounts:
    """This process's counts from drawing an iteration's batch (summed over processes for the metrics)."""

    groups: int = 0
    """Groups of the iteration's own prompts."""
    zero_variance: int = 0
    """Of those, groups whose samples all scored the same."""
    drawn: int = 0
    """Groups generated, extra draws included."""
    dropped: int = 0
    """Groups dropped by dynamic sampling for equal scores."""
    filled: int = 0
    """Dropped groups put back to complete a batch the extra draws could not fill."""
    draws: int = 0
    """Extra generation rounds."""


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, factor: float) -> torch.Tensor:
    """DAPO's soft overlong punishment (eq. 13): 0 up to max_new_tokens - buffer tokens, then falling
    linearly to -factor at max_new_tokens (generation stops there, so nothing is longer)."""
    excess = (lengths.float() - (max_new_tokens - buffer)).clamp(min=0)
    return -factor * excess / buffer


def equal_score_groups(scores: torch.Tensor, size: int) -> torch.Tensor:
    """[groups] True where every sample of the group got the same score."""
    grouped = scores.view(-1, size)
    return (grouped.max(1).values - grouped.min(1).values) <= EQUAL_SCORES


def score_rollouts(run: PPORun, rollouts: list[Rollout], prompts: list[int]) -> ScoredRollouts:
    """Each rollout's reward, in parts and in total."""
    config = run.config
    with run.autocast():
        parts = run.reward.components([r.text for r in rollouts], [run.records[i] for i in prompts])
    scores = run.reward.combine(parts)
    if config.overlong_buffer:
        lengths = torch.tensor([len(r.token_ids) for r in rollouts])
        parts["overlong_penalty"] = overlong_penalty(
            lengths, config.max_new_tokens, config.overlong_buffer, config.overlong_penalty_factor
        )
        scores = scores + parts["overlong_penalty"]
    return ScoredRollouts(rollouts, prompts, parts, scores)


def generate(run: PPORun, prompts: list[int], seed: int) -> list[Rollout]:
    """`samples_per_prompt` samples of each prompt, grouped by prompt."""
    config = run.config
    return run.engine.generate(
        [run.prompt_ids[i] for i in prompts],
        Sampling(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            n=config.samples_per_prompt,
            stop_token_ids=(run.tokenizer.eos_token_id,),
            seed=seed,
        ),
    )


def draw_batch(run: PPORun, iteration: int, batch: list[int]) -> tuple[ScoredRollouts, DrawCounts]:
    """This process's share of iteration `iteration`'s prompts `batch`, generated and scored; with
    `dynamic_sampling`, its groups of equal scores replaced by groups of extra prompts.

    Each process fills its own share, so every process trains on as many sequences as the others
    (DDP needs as many backward passes on every rank): after `dynamic_sampling_max_draws` extra
    draws a share still short is completed with dropped groups, which are counted as `filled`.
    """
    config, accelerator = run.config, run.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    size, per_rank = config.samples_per_prompt, config.prompts_per_iteration // world
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    # Engines seed prompt i of a call with seed + i: the seed of a prompt depends on its place in
    # the iteration's batch, not on how the batch is split across processes.
    base = config.seed * 1_000_003 + rank * per_rank
    rollouts = generate(run, mine, base + iteration * config.prompts_per_iteration)
    first = score_rollouts(run, rollouts, [mine[r.prompt_index] for r in rollouts])
    counts = DrawCounts(groups=per_rank, drawn=per_rank)
    if size > 1:
        counts.zero_variance = int(equal_score_groups(first.scores, size).sum())
    if not config.dynamic_sampling:
        return first, counts
    kept, dropped = [], []
    scored = first
    while True:
        for group in scored.groups(size):
            (dropped if bool(equal_score_groups(group.scores, size)[0]) else kept).append(group)
        counts.dropped = len(dropped)
        if len(kept) >= per_rank or counts.draws == config.dynamic_sampling_max_draws:
            break
        counts.draws += 1
        extra = refill_batch(
            iteration,
            counts.draws,
            config.prompts_per_iteration,
            len(run.records),
            config.seed,
            config.dynamic_sampling_max_draws,
        )[rank * per_rank : (rank + 1) * per_rank]
        position = iteration * config.dynamic_sampling_max_draws + counts.draws - 1
        rollouts = generate(run, extra, base + REFILL_SEED_OFFSET + position * config.prompts_per_iteration)
        scored = score_rollouts(run, rollouts, [extra[r.prompt_index] for r in rollouts])
        counts.drawn += per_rank
    counts.filled = max(0, per_rank - len(kept))
    return ScoredRollouts.concat((kept + dropped[: counts.filled])[:per_rank]), counts
