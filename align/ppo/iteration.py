"""One PPO iteration: generate and score (dropping equal-score groups with dynamic sampling) ->
reference log-probs, values -> KL-shaped rewards -> advantages (GAE or a critic-free estimator) ->
whiten -> epochs of clipped minibatch updates with gradient accumulation, the loss aggregated over
the global minibatch and weighed by the rollout correction -> push the new weights into the engine.

With several processes each one generates and trains on its share of the iteration's prompts and
DDP averages the gradients. Everything that is a statistic of the batch (reward and advantage
whitening, the loss's normaliser, the KL that drives β, the logged metrics) is taken over all
processes' rollouts, so every rank takes the same decisions and logs the same numbers as one
process with the whole batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from align.errors import InputError
from align.finite import check_finite_gradients
from align.ppo.advantages import ESTIMATORS, whiten
from align.ppo.config import PPOConfig
from align.ppo.diagnostics import length_stats, prompt_text, rollout_ratio_stats
from align.ppo.experience import (
    Experience,
    RewardSource,
    length_sorted_chunks,
    log_probs_and_entropy,
    logprob_mismatch,
    make_experience,
    response_logits,
    response_values,
)
from align.ppo.losses import (
    LossAggregation,
    kl_loss_term,
    kl_penalty,
    policy_loss,
    rollout_ratios,
    value_loss,
)
from align.ppo.prompts import prompt_batch
from align.ppo.sampling import DrawCounts, ScoredRollouts, draw_batch
from align.ppo.state import PPOState
from rollouts.base import RolloutEngine


@dataclass
class PPORun:
    """The parts of a run that no iteration changes."""

    config: PPOConfig
    accelerator: object
    engine: RolloutEngine
    tokenizer: object
    records: list[dict]
    prompt_ids: list[list[int]]
    reference: torch.nn.Module | None
    """The frozen reference; None when it is the LoRA policy with its adapter off."""
    reward: RewardSource
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over every process."""
        return self.accelerator.reduce(tensor, reduction="sum")

    def push_weights(self, policy) -> None:
        """The policy's weights into the engine. Each process's in-process engine takes them; a
        server shared by every process takes one push, from the main process, and the others
        wait for it before they generate again."""
        if not self.engine_is_shared or self.accelerator.is_main_process:
            self.engine.load_weights(engine_weights(self.accelerator.unwrap_model(policy)))
        if self.engine_is_shared:
            self.accelerator.wait_for_everyone()

    @property
    def engine_is_shared(self) -> bool:
        return self.config.engine == "server"


def engine_weights(policy, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's parameters under HF names; a PEFT LoRA policy is merged while they stream
    (`merged=False`: its base weights, the reference). A merged tensor is valid only until the
    stream ends (the adapter is unmerged in place then): a consumer that keeps them copies them."""
    if not hasattr(policy, "merge_adapter"):
        yield from policy.named_parameters()
        return
    if merged:
        policy.merge_adapter()
    try:
        for name, param in policy.named_parameters():
            if "lora_" in name:
                continue
            yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), param
    finally:
        if merged:
            policy.unmerge_adapter()


def single_on_policy_step(config: PPOConfig, rollouts: int) -> bool:
    """Whether an iteration's update is one optimizer step whose log-probs need no old ones first:
    one epoch, one minibatch, and a KL that is not folded into the rewards (which need the policy's
    log-probs before the advantages exist)."""
    return config.kl_penalty == "loss" and config.ppo_epochs == 1 and config.minibatch_size >= rollouts


def compute_advantages(
    experience: Experience,
    kl_coef: float,
    config: PPOConfig,
    all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Advantages and returns into `experience`; whitening statistics over every process's
    rollouts when `all_sum` sums across processes."""
    mask = experience.response_mask
    token_rewards = torch.zeros_like(mask)
    if config.kl_penalty == "reward":
        token_rewards = -kl_coef * kl_penalty(experience.old_logprobs, experience.ref_logprobs) * mask
    scores = experience.scores
    if config.whiten_rewards:
        scores = whiten(scores, torch.ones_like(scores), all_sum=all_sum)
    advantages, returns = ESTIMATORS[config.advantage].compute(
        token_rewards, scores, experience.values, mask, config.samples_per_prompt, config.gamma, config.lam
    )
    experience.advantages = (
        whiten(advantages, mask, all_sum=all_sum) if config.whiten_advantages else advantages
    )
    experience.returns = returns


def train_on(
    experience: Experience,
    policy,
    critic,
    optimizers,
    accelerator,
    config: PPOConfig,
    kl_coef: float,
    on_policy_first_pass: bool = False,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    iteration: int = 0,
) -> dict[str, float]:
    """`ppo_epochs` passes of clipped minibatch updates; gradients accumulate over micro-batches
    (length-sorted, padding trimmed). `on_policy_first_pass`: the policy has not moved since the
    rollouts, so the first pass's own log-probs are the old ones (written into `experience`).

    The loss of a minibatch is aggregated over the whole minibatch on every process
    (`config.loss_aggregation`, `LossAggregation`): a micro-batch adds its exact share, so loss and
    gradient do not depend on micro_batch_size or the number of processes. Returns the statistics
    over every token (or minibatch, for the losses) of the update on every process.
    """
    models = [m for m in (policy, critic) if m is not None]
    device = experience.response_mask.device
    processes = accelerator.num_processes
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}

    def add(key: str, total: torch.Tensor, count: torch.Tensor | float) -> None:
        sums[key] = sums.get(key, 0.0) + total.detach().double()
        counts[key] = counts.get(key, 0.0) + torch.as_tensor(count, dtype=torch.float64, device=device)

    def all_sum(tensor: torch.Tensor) -> torch.Tensor:
        return accelerator.reduce(tensor, reduction="sum")

    for epoch in range(config.ppo_epochs):
        order = torch.randperm(len(experience.input_ids))
        for start in range(0, len(order), config.minibatch_size):
            minibatch = order[start : start + config.minibatch_size].to(experience.input_ids.device)
            tokens, sequences = all_sum(
                torch.stack(
                    [
                        experience.response_mask[minibatch].sum(),
                        torch.tensor(float(len(minibatch)), device=device),
                    ]
                )
            ).tolist()
            aggregate, token_mean = (
                LossAggregation(mode, tokens, sequences, config.max_new_tokens, processes)
                for mode in (config.loss_aggregation, "token-mean")
            )
            micro_batches = [
                minibatch[chunk]
                for chunk in length_sorted_chunks(
                    experience.attention_mask[minibatch], config.micro_batch_size
                )
            ]
            for k, micro in enumerate(micro_batches):
                sub = experience.select(micro)
                mask = sub.response_mask
                width = mask.shape[1]
                share = len(micro) / len(minibatch)
                last = k == len(micro_batches) - 1
                with contextlib.ExitStack() as stack:
                    if not last:
                        for model in models:
                            stack.enter_context(accelerator.no_sync(model))
                    stack.enter_context(autocast())
                    logits = response_logits(
                        policy, sub.input_ids, sub.attention_mask, width, config.temperature
                    )
                    logprobs, token_entropy = log_probs_and_entropy(
                        logits, sub.input_ids[:, -width:], entropy_grad=bool(config.entropy_coef)
                    )
                    if on_policy_first_pass and epoch == 0:
                        sub.old_logprobs = logprobs.detach() * mask
                        experience.old_logprobs[micro, :width] = sub.old_logprobs
                    weights = None
                    if config.rollout_correction != "none":
                        weights = rollout_ratios(
                            sub.old_logprobs,
                            sub.engine_logprobs,
                            mask,
                            config.rollout_correction,
                            config.rollout_correction_cap,
                            config.rollout_correction_floor,
                        ).weights
                    loss, info = policy_loss(
                        logprobs,
                        sub.old_logprobs,
                        sub.advantages,
                        mask,
                        config.clip_range_low if config.clip_range_low is not None else config.clip_range,
                        config.clip_range_high,
                        weights,
                        aggregate,
                    )
                    terms = {"policy_loss": loss}
                    if config.entropy_coef:
                        loss = loss - config.entropy_coef * aggregate(token_entropy, mask)
                    if config.kl_penalty == "loss":
                        terms["kl_loss"] = aggregate(kl_loss_term(logprobs, sub.ref_logprobs), mask)
                        loss = loss + kl_coef * terms["kl_loss"]
                    if critic is not None:
                        values = response_values(critic, sub.input_ids, sub.attention_mask, width)
                        terms["value_loss"] = value_loss(
                            values, sub.values, sub.returns, mask, config.value_clip_range, token_mean
                        )
                        loss = loss + config.value_coef * terms["value_loss"]
                    accelerator.backward(loss)
                # A loss term's shares add up to `processes` x the minibatch's loss over the ranks.
                for key, term in terms.items():
                    add(key, term, share)
                n, positive, negative = (
                    mask.sum(),
                    (mask * (sub.advantages > 0)).sum(),
                    (mask * (sub.advantages < 0)).sum(),
                )
                add("entropy", (token_entropy * mask).sum(), n)
                for key, mean in info.items():
                    count = {"clip_fraction/pos_adv": positive, "clip_fraction/neg_adv": negative}.get(key, n)
                    add(key, mean * count, count)
            for model, name in zip(models, ("the policy", "the critic"), strict=False):
                check_finite_gradients(model.parameters(), f"iteration {iteration + 1}", name)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    keys = sorted(sums)
    totals = all_sum(torch.stack([sums[k] for k in keys] + [counts[k] for k in keys])).tolist()
    # A statistic with nothing to average (no token had a negative advantage) is left out.
    return {k: s / c for k, s, c in zip(keys, totals[: len(keys)], totals[len(keys) :], strict=True) if c > 0}


def ppo_iteration(run: PPORun, state: PPOState) -> dict:
    """Iteration `state.iteration` (from 0): update the models and β, push the new weights;
    returns the iteration's metrics (the same on every process; on the main process, every
    `sample_log_every` iterations, also `samples`: rows of the sample table)."""
    config, accelerator = run.config, run.accelerator
    iteration = state.iteration
    batch = prompt_batch(iteration, config.prompts_per_iteration, len(run.records), config.seed)
    t0 = time.perf_counter()
    state.policy.eval()
    drawn, counts = draw_batch(run, iteration, batch)
    rollouts = drawn.rollouts
    t1 = time.perf_counter()
    on_policy = single_on_policy_step(config, len(rollouts))
    experience = make_experience(
        rollouts,
        [run.records[i] for i in drawn.prompts],
        state.policy,
        run.reference,
        state.critic,
        run.reward,
        run.tokenizer.pad_token_id,
        config.temperature,
        config.micro_batch_size,
        accelerator.device,
        autocast=run.autocast,
        old_logprobs=not on_policy,
        scores=drawn.scores,
    )
    if config.rollout_correction != "none" and experience.engine_logprobs is None:
        raise InputError(
            f"rollout_correction: the {config.engine} engine returned no log-probs of its samples to "
            "correct with; use rollout_correction: none"
        )
    compute_advantages(experience, state.controller.value, config, run.all_sum)
    t2 = time.perf_counter()
    state.policy.train()
    if state.critic is not None:
        state.critic.train()
    train_stats = train_on(
        experience,
        state.policy,
        state.critic,
        state.optimizers,
        accelerator,
        config,
        state.controller.value,
        on_policy,
        run.autocast,
        iteration,
    )
    t3 = time.perf_counter()
    mask = experience.response_mask
    sequence_kl = (kl_penalty(experience.old_logprobs, experience.ref_logprobs) * mask).sum(1)
    mismatch = logprob_mismatch(rollouts, experience.old_logprobs)
    run.push_weights(state.policy)
    t4 = time.perf_counter()
    truncated = torch.tensor([r.finish_reason == "length" for r in rollouts], device=accelerator.device)
    scores, kls, lengths, truncated = (
        accelerator.gather(t.contiguous()) for t in (experience.scores, sequence_kl, mask.sum(1), truncated)
    )
    kl = kls.mean().item()
    total = t4 - t0
    metrics = {
        "iteration": iteration + 1,
        "reward_mean": scores.mean().item(),
        "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
        **{
            f"reward/{name}": accelerator.gather(part.to(accelerator.device)).mean().item()
            for name, part in drawn.parts.items()
        },
        "kl": kl,
        "kl_coef": state.controller.value,
        **length_stats(lengths, truncated),
        "advantage_mean": (
            run.all_sum((experience.advantages * mask).sum()) / run.all_sum(mask.sum())
        ).item(),
        **sampling_metrics(run, counts),
        **train_stats,
        **rank_means(accelerator, mismatch),
        "time/generation": t1 - t0,
        "time/scoring": t2 - t1,
        "time/training": t3 - t2,
        "time/sync": t4 - t3,
        "time/generation_share": (t1 - t0) / total,
        "time/sync_share": (t4 - t3) / total,
        "prompts": batch,
    }
    if "logprob_mismatch_max" in mismatch:
        largest = torch.tensor([mismatch["logprob_mismatch_max"]], device=accelerator.device)
        metrics["logprob_mismatch_max"] = accelerator.gather(largest).max().item()
    if experience.engine_logprobs is not None:
        ratios = rollout_ratios(
            experience.old_logprobs,
            experience.engine_logprobs,
            mask,
            config.rollout_correction,
            config.rollout_correction_cap,
            config.rollout_correction_floor,
        )
        metrics.update(
            rollout_ratio_stats(ratios, config.rollout_correction, run.all_sum, accelerator.gather)
        )
    if (
        config.sample_log_every
        and (iteration + 1) % config.sample_log_every == 0
        and accelerator.is_main_process
    ):
        metrics["samples"] = sample_rows(run, drawn, experience, sequence_kl, iteration + 1)
    state.controller.update(kl)
    state.iteration += 1
    return metrics


def sampling_metrics(run: PPORun, counts: DrawCounts) -> dict[str, float]:
    """The share of zero-variance groups (all samples scored the same) in the iteration's own
    prompts, and with dynamic sampling the share of drawn groups it dropped, the share of the
    batch it had to fill with dropped ones, and its extra draws per process."""
    config = run.config
    if config.samples_per_prompt < 2:
        return {}
    fields = ("groups", "zero_variance", "drawn", "dropped", "filled", "draws")
    values = [float(getattr(counts, f)) for f in fields]
    total = dict(
        zip(fields, run.all_sum(torch.tensor(values, device=run.accelerator.device)).tolist(), strict=True)
    )
    metrics = {"zero_variance_groups": total["zero_variance"] / total["groups"]}
    if config.dynamic_sampling:
        metrics["dynamic_sampling/dropped_share"] = total["dropped"] / total["drawn"]
        metrics["dynamic_sampling/filled_share"] = total["filled"] / total["groups"]
        metrics["dynamic_sampling/draws"] = total["draws"] / run.accelerator.num_processes
    return metrics


def sample_rows(
    run: PPORun, drawn: ScoredRollouts, experience: Experience, sequence_kl: torch.Tensor, iteration: int
) -> list[dict]:
    """The first `sample_log_count` samples of this process: what the policy wrote and what it got."""
    mask = experience.response_mask
    advantage = (experience.advantages * mask).sum(1) / mask.sum(1).clamp(min=1)
    rows = []
    for i in range(min(run.config.sample_log_count, len(drawn.rollouts))):
        rollout = drawn.rollouts[i]
        rows.append(
            {
                "iteration": iteration,
                "prompt": prompt_text(run.records[drawn.prompts[i]]),
                "response": rollout.text,
                "reward": float(drawn.scores[i]),
                **{f"reward/{name}": float(part[i]) for name, part in drawn.parts.items()},
                "advantage": float(advantage[i]),
                "kl": float(sequence_kl[i]),
                "length": len(rollout.token_ids),
                "finish_reason": rollout.finish_reason,
            }
        )
    return rows


def rank_means(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Each statistic averaged over processes (every process has the same keys)."""
    if accelerator.num_processes == 1:
        return stats
    keys = sorted(stats)
    local = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    means = accelerator.reduce(local, reduction="mean").tolist()
    return dict(zip(keys, means, strict=True))
