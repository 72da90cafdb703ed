"""One PPO iteration: generate -> score, reference log-probs, values -> KL-shaped rewards ->
advantages (GAE or a critic-free estimator) -> whiten -> epochs of clipped minibatch updates with
gradient accumulation -> push the new weights into the engine.

With several processes each one generates and trains on its share of the iteration's prompts and
DDP averages the gradients. Everything that is a statistic of the batch (reward and advantage
whitening, the KL that drives β, the logged metrics) is taken over all processes' rollouts, so
every rank takes the same decisions and logs the same numbers as one process with the whole batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from align.finite import check_finite_gradients
from align.ppo.advantages import ESTIMATORS, masked_mean, whiten
from align.ppo.config import PPOConfig
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
from align.ppo.losses import kl_loss_term, kl_penalty, policy_loss, value_loss
from align.ppo.prompts import prompt_batch
from align.ppo.state import PPOState
from rollouts.base import RolloutEngine, Sampling


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
    rollouts, so the first pass's own log-probs are the old ones (written into `experience`)."""
    models = [m for m in (policy, critic) if m is not None]
    stats: dict[str, list[float]] = {}
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(len(experience.input_ids))
        for start in range(0, len(order), config.minibatch_size):
            minibatch = order[start : start + config.minibatch_size].to(experience.input_ids.device)
            micro_batches = [
                minibatch[chunk]
                for chunk in length_sorted_chunks(
                    experience.attention_mask[minibatch], config.micro_batch_size
                )
            ]
            for k, micro in enumerate(micro_batches):
                sub = experience.select(micro)
                width = sub.response_mask.shape[1]
                weight = len(micro) / len(minibatch)
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
                        sub.old_logprobs = logprobs.detach() * sub.response_mask
                        experience.old_logprobs[micro, :width] = sub.old_logprobs
                    loss, info = policy_loss(
                        logprobs, sub.old_logprobs, sub.advantages, sub.response_mask, config.clip_range
                    )
                    ent = masked_mean(token_entropy, sub.response_mask)
                    info.update(policy_loss=loss.detach(), entropy=ent.detach())
                    if config.entropy_coef:
                        loss = loss - config.entropy_coef * ent
                    if config.kl_penalty == "loss":
                        kl_term = masked_mean(kl_loss_term(logprobs, sub.ref_logprobs), sub.response_mask)
                        info["kl_loss"] = kl_term.detach()
                        loss = loss + kl_coef * kl_term
                    if critic is not None:
                        values = response_values(critic, sub.input_ids, sub.attention_mask, width)
                        vloss = value_loss(
                            values, sub.values, sub.returns, sub.response_mask, config.value_clip_range
                        )
                        info["value_loss"] = vloss.detach()
                        loss = loss + config.value_coef * vloss
                    accelerator.backward(loss * weight)
                for key, value in info.items():
                    stats.setdefault(key, []).append(float(value))
            for model, name in zip(models, ("the policy", "the critic"), strict=False):
                check_finite_gradients(model.parameters(), f"iteration {iteration + 1}", name)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return {key: sum(values) / len(values) for key, values in stats.items()}


def ppo_iteration(run: PPORun, state: PPOState) -> dict:
    """Iteration `state.iteration` (from 0): update the models and β, push the new weights;
    returns the iteration's metrics (the same on every process)."""
    config, accelerator = run.config, run.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    iteration = state.iteration
    batch = prompt_batch(iteration, config.prompts_per_iteration, len(run.records), config.seed)
    per_rank = config.prompts_per_iteration // world
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    t0 = time.perf_counter()
    state.policy.eval()
    # Engines seed prompt i of a call with seed + i: the seed of a prompt depends on its place in
    # the iteration's batch, not on how the batch is split across processes.
    seed = config.seed * 1_000_003 + iteration * config.prompts_per_iteration + rank * per_rank
    rollouts = run.engine.generate(
        [run.prompt_ids[i] for i in mine],
        Sampling(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            n=config.samples_per_prompt,
            stop_token_ids=(run.tokenizer.eos_token_id,),
            seed=seed,
        ),
    )
    t1 = time.perf_counter()
    on_policy = single_on_policy_step(config, len(rollouts))
    experience = make_experience(
        rollouts,
        [run.records[mine[r.prompt_index]] for r in rollouts],
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
    scores, kls, lengths = (
        accelerator.gather(t.contiguous()) for t in (experience.scores, sequence_kl, mask.sum(1))
    )
    kl = kls.mean().item()
    total = t4 - t0
    metrics = {
        "iteration": iteration + 1,
        "reward_mean": scores.mean().item(),
        "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
        "kl": kl,
        "kl_coef": state.controller.value,
        "response_length": lengths.float().mean().item(),
        "advantage_mean": (
            run.all_sum((experience.advantages * mask).sum()) / run.all_sum(mask.sum())
        ).item(),
        **rank_means(accelerator, {**train_stats, **mismatch}),
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
    state.controller.update(kl)
    state.iteration += 1
    return metrics


def rank_means(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Each statistic averaged over processes (every process has the same keys)."""
    if accelerator.num_processes == 1:
        return stats
    keys = sorted(stats)
    local = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    means = accelerator.reduce(local, reduction="mean").tolist()
    return dict(zip(keys, means, strict=True))
