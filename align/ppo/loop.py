"""`align ppo`: the PPO loop on Accelerate, rollouts from a vLLM (or HF, or server) engine.

Per iteration: generate -> score, reference log-probs, values -> KL-shaped rewards -> advantages
(GAE or a critic-free estimator) -> whiten -> epochs of clipped minibatch updates with gradient
accumulation -> push the new weights into the engine -> log, checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from align.checkpoint import CHECKPOINTS_DIR, CheckpointManager
from align.distributed import autocast_context, finish_trackers, make_accelerator
from align.models import load_model, load_tokenizer
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
from align.ppo.kl_controller import KLController
from align.ppo.losses import kl_loss_term, kl_penalty, policy_loss, value_loss
from align.ppo.prompts import encode_prompt, prompt_batch, read_prompts
from rollouts.base import RolloutEngine, Sampling

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
QUALITY = "quality.json"


def make_engine(config: PPOConfig) -> RolloutEngine:
    from rollouts.factory import EngineConfig, build_engine

    engine_config = EngineConfig(
        kind=config.engine,
        base_url=config.server_url or EngineConfig.base_url,
        max_model_len=config.max_prompt_tokens + config.max_new_tokens,
        kv_cache_gib=config.vllm_kvcache_gib,
        seed=config.seed,
        num_threads=config.num_threads,
    )
    return build_engine(engine_config, config.policy)


def engine_weights(policy, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's parameters under HF names; a PEFT LoRA policy is merged while they stream
    (`merged=False`: its base weights, the reference)."""
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


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def cpu_copy(state: dict) -> dict:
    return {
        k: cpu_copy(v) if isinstance(v, dict) else v.detach().cpu().clone() if torch.is_tensor(v) else v
        for k, v in state.items()
    }


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
            for model in models:
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return {key: sum(values) / len(values) for key, values in stats.items()}


def single_on_policy_step(config: PPOConfig, rollouts: int) -> bool:
    """Whether an iteration's update is one optimizer step whose log-probs need no old ones first:
    one epoch, one minibatch, and a KL that is not folded into the rewards (which need the policy's
    log-probs before the advantages exist)."""
    return config.kl_penalty == "loss" and config.ppo_epochs == 1 and config.minibatch_size >= rollouts


def compute_advantages(experience: Experience, kl_coef: float, config: PPOConfig) -> None:
    mask = experience.response_mask
    token_rewards = torch.zeros_like(mask)
    if config.kl_penalty == "reward":
        token_rewards = -kl_coef * kl_penalty(experience.old_logprobs, experience.ref_logprobs) * mask
    scores = experience.scores
    if config.whiten_rewards:
        scores = (scores - scores.mean()) / (scores.std() + 1e-8)
    advantages, returns = ESTIMATORS[config.advantage](
        token_rewards, scores, experience.values, mask, config.samples_per_prompt, config.gamma, config.lam
    )
    experience.advantages = whiten(advantages, mask) if config.whiten_advantages else advantages
    experience.returns = returns


def plot_curves(metrics_path: Path, out: Path, quality_path: Path | None = None) -> None:
    """reward_mean and KL per iteration, one PNG; with `eval_every`, a third panel of held-out
    correctness (and RM score, right axis), the reference's from `quality_path` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    steps = [r["iteration"] for r in rows]
    evaluated = [r for r in rows if "eval/correct" in r]
    fig, axes = plt.subplots(3 if evaluated else 2, 1, figsize=(7, 9 if evaluated else 6), sharex=True)
    axes[0].plot(steps, [r["reward_mean"] for r in rows])
    axes[0].set_ylabel("mean reward")
    axes[1].plot(steps, [r["kl"] for r in rows], color="tab:red")
    axes[1].set_ylabel("KL to reference")
    if evaluated:
        held_out = axes[2]
        at = [r["iteration"] for r in evaluated]
        held_out.plot(at, [r["eval/correct"] for r in evaluated], "o-", color="tab:green")
        held_out.set_ylabel("held-out correctness", color="tab:green")
        reference = None
        if quality_path is not None and quality_path.is_file():
            reference = json.loads(quality_path.read_text(encoding="utf-8"))["reference"]
            held_out.axhline(reference["correct"], color="tab:green", linestyle="--")
        if "eval/reward_mean" in evaluated[0]:
            rm_axis = held_out.twinx()
            rm_axis.plot(at, [r["eval/reward_mean"] for r in evaluated], "s-", color="tab:purple")
            rm_axis.set_ylabel("held-out RM score", color="tab:purple")
            if reference is not None and "reward_mean" in reference:
                rm_axis.axhline(reference["reward_mean"], color="tab:purple", linestyle="--")
    axes[-1].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run_ppo(config: PPOConfig, engine: RolloutEngine | None = None) -> Path:
    """Run PPO (or a critic-free variant); returns the directory of the final policy.

    `engine`: a running engine of the same architecture to reuse (tests, notebooks); it receives
    the policy's weights first and is left open. Default: a new one as `config.engine` says.
    """
    from transformers import AutoModelForSequenceClassification

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trackers = [t for t in config.report_to if t != "none"]
    accelerator = make_accelerator(log_with=trackers or None, project_dir=str(out))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    autocast = autocast_context(config.precision, device.type)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    tokenizer = load_tokenizer(config.policy)
    records = read_prompts(config.prompts)
    eval_records = read_prompts(config.eval_prompts)[: config.eval_limit] if config.eval_prompts else []
    prompt_ids = [encode_prompt(tokenizer, r, config.max_prompt_tokens) for r in records]
    pad_id = tokenizer.pad_token_id

    policy = load_model(config.policy)
    if config.lora_r:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(
            policy, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear")
        )
    # A LoRA policy's reference is its own base weights (adapter off): no second copy in memory.
    reference = None
    if not (config.lora_r and config.reference is None):
        reference = load_model(config.reference or config.policy).to(device).eval().requires_grad_(False)
    reward = RewardSource(
        config.reward_model, config.reward_rule, tokenizer, device, config.reward_rule_weight
    )
    critic = None
    if config.advantage == "gae":
        source = config.reward_model if config.critic_init == "reward_model" else config.policy
        critic = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=1, dtype=torch.float32
        )
        critic.config.pad_token_id = pad_id
    optimizers = [
        torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
    ]
    if critic is not None:
        optimizers.append(
            torch.optim.AdamW(
                critic.parameters(), lr=config.critic_learning_rate, weight_decay=config.weight_decay
            )
        )
        policy, critic, *optimizers = accelerator.prepare(policy, critic, *optimizers)
    else:
        policy, *optimizers = accelerator.prepare(policy, *optimizers)

    checkpoints = CheckpointManager(out / CHECKPOINTS_DIR, keep=config.keep_checkpoints)
    start = 0
    controller = KLController(config.kl_coef, config.kl_target, config.kl_bound)
    latest = checkpoints.latest() if config.resume else None
    if latest is not None:
        state = torch.load(latest / "state.pt", weights_only=False)
        accelerator.unwrap_model(policy).load_state_dict(state["policy"])
        if critic is not None:
            accelerator.unwrap_model(critic).load_state_dict(state["critic"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)])
        start, controller.value = state["iteration"], state["kl_coef"]
        log.info("resumed from %s at iteration %d", latest, start)
    metrics_path = out / METRICS
    if accelerator.is_main_process:
        kept = []
        if start and metrics_path.exists():
            rows = metrics_path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in rows if line.strip() and json.loads(line)["iteration"] <= start]
        metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    accelerator.init_trackers("ppo", config={"advantage": config.advantage, "kl_coef": config.kl_coef})

    final_quality = None  # the last iteration's held-out evaluation, when `eval_every` ran one
    owned = engine is None
    engine = make_engine(config) if owned else engine
    unwrapped = accelerator.unwrap_model(policy)
    if start or not owned:
        engine.load_weights(engine_weights(unwrapped))
    per_rank = config.prompts_per_iteration // world
    sampling = dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        n=config.samples_per_prompt,
        stop_token_ids=(tokenizer.eos_token_id,),
    )
    bar = tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        desc="ppo",
        disable=not accelerator.is_local_main_process,
    )
    try:
        for iteration in bar:
            batch = prompt_batch(iteration, config.prompts_per_iteration, len(records), config.seed)
            mine = batch[rank * per_rank : (rank + 1) * per_rank]
            t0 = time.perf_counter()
            policy.eval()
            rollouts = engine.generate(
                [prompt_ids[i] for i in mine],
                Sampling(**sampling, seed=config.seed * 1_000_003 + iteration * world + rank),
            )
            t1 = time.perf_counter()
            on_policy = single_on_policy_step(config, len(rollouts))
            experience = make_experience(
                rollouts,
                [records[mine[r.prompt_index]] for r in rollouts],
                policy,
                reference,
                critic,
                reward,
                pad_id,
                config.temperature,
                config.micro_batch_size,
                device,
                autocast=autocast,
                old_logprobs=not on_policy,
            )
            compute_advantages(experience, controller.value, config)
            t2 = time.perf_counter()
            policy.train()
            if critic is not None:
                critic.train()
            train_stats = train_on(
                experience,
                policy,
                critic,
                optimizers,
                accelerator,
                config,
                controller.value,
                on_policy,
                autocast,
            )
            t3 = time.perf_counter()
            mask = experience.response_mask
            kl = (kl_penalty(experience.old_logprobs, experience.ref_logprobs) * mask).sum(1).mean().item()
            mismatch = logprob_mismatch(rollouts, experience.old_logprobs)
            engine.load_weights(engine_weights(unwrapped))
            t4 = time.perf_counter()
            total = t4 - t0
            done = iteration + 1
            metrics = {
                "iteration": done,
                "reward_mean": experience.scores.mean().item(),
                "reward_std": experience.scores.std().item() if len(rollouts) > 1 else 0.0,
                "kl": kl,
                "kl_coef": controller.value,
                "response_length": mask.sum(1).mean().item(),
                "advantage_mean": masked_mean(experience.advantages, mask).item(),
                **train_stats,
                **mismatch,
                "time/generation": t1 - t0,
                "time/scoring": t2 - t1,
                "time/training": t3 - t2,
                "time/sync": t4 - t3,
                "time/generation_share": (t1 - t0) / total,
                "time/sync_share": (t4 - t3) / total,
                "prompts": batch,
            }
            if config.eval_every and done % config.eval_every == 0 and accelerator.is_main_process:
                quality = held_out_quality(config, engine, tokenizer, reward, eval_records)
                final_quality = quality if done == config.iterations else None
                metrics.update(eval_metrics(quality), **{"time/eval": time.perf_counter() - t4})
            controller.update(kl)
            accelerator.log({k: v for k, v in metrics.items() if k != "prompts"}, step=done)
            bar.set_postfix(
                reward=f"{metrics['reward_mean']:.3f}",
                kl=f"{kl:.3f}",
                clip=f"{train_stats['clip_fraction']:.2f}",
            )
            if accelerator.is_main_process:
                with open(metrics_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(metrics) + "\n")
            if config.save_every and done % config.save_every == 0 and done < config.iterations:
                save_checkpoint(checkpoints, done, controller.value, policy, critic, optimizers, accelerator)
        if config.eval_prompts is not None and accelerator.is_main_process:
            write_quality(
                config,
                engine,
                tokenizer,
                reward,
                reference.named_parameters() if reference is not None else engine_weights(unwrapped, False),
                eval_records,
                out / QUALITY,
                final_quality,
            )
    finally:
        if owned:
            engine.close()
    save_checkpoint(checkpoints, config.iterations, controller.value, policy, critic, optimizers, accelerator)
    final = out / "policy"
    if accelerator.is_main_process:
        model = unwrapped.merge_and_unload() if config.lora_r else unwrapped
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        plot_curves(metrics_path, out / "curves.png", out / QUALITY)
        log.info("final policy in %s; curves in %s", final, out / "curves.png")
    checkpoints.close()
    finish_trackers(accelerator)
    return final


def quality_sampling(config: PPOConfig) -> dict:
    """How held-out samples are drawn. One seed for every evaluation of a run: the policies are
    compared on common random numbers, so most of the sampling noise cancels between evaluations."""
    return dict(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        samples_per_prompt=config.eval_samples_per_prompt,
        seed=config.seed + 1,
        max_prompt_tokens=config.max_prompt_tokens,
    )


def held_out_quality(config: PPOConfig, engine, tokenizer, reward, records: list[dict]) -> dict:
    """Fresh samples of the engine's current weights on the held-out prompts."""
    from align.ppo.evaluate import engine_quality

    return engine_quality(engine, tokenizer, records, reward, **quality_sampling(config))


def eval_metrics(quality: dict) -> dict[str, float]:
    """A held-out evaluation as flat metrics: eval/correct, eval/correct/<kind>, eval/reward_mean."""
    flat = {"eval/correct": quality["correct"]}
    flat.update({f"eval/correct/{kind}": share for kind, share in quality["correct_by_kind"].items()})
    if "reward_mean" in quality:
        flat["eval/reward_mean"] = quality["reward_mean"]
    return flat


def write_quality(
    config: PPOConfig,
    engine,
    tokenizer,
    reward,
    reference_weights: Iterable[tuple[str, torch.Tensor]],
    records: list[dict],
    path: Path,
    policy: dict | None = None,
) -> None:
    """Fresh samples of the final policy (unless `policy` already holds them), then of the reference."""
    if policy is None:  # the engine holds the last sync
        policy = held_out_quality(config, engine, tokenizer, reward, records)
    engine.load_weights(reference_weights)
    before = held_out_quality(config, engine, tokenizer, reward, records)
    result = {"reference": before, "policy": policy, "prompts": len(records), **quality_sampling(config)}
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    log.info("held-out fresh samples, reference -> policy: %s", _compare(before, policy))


def _compare(before: dict, after: dict) -> str:
    pairs = [(k, before[k], after[k]) for k in ("reward_mean", "correct") if k in before]
    pairs += [(k, v, after["correct_by_kind"].get(k, 0.0)) for k, v in before["correct_by_kind"].items()]
    return ", ".join(f"{name} {a:.3f} -> {b:.3f}" for name, a, b in pairs)


def save_checkpoint(checkpoints, iteration, kl_coef, policy, critic, optimizers, accelerator) -> None:
    """Policy, critic, optimizers, KL coefficient and RNG; the prompt position is `iteration`."""
    rngs = accelerator.gather_for_metrics([rng_state()], use_gather_object=True)
    if not accelerator.is_main_process:
        return
    state = {
        "iteration": iteration,
        "kl_coef": kl_coef,
        "policy": cpu_copy(accelerator.unwrap_model(policy).state_dict()),
        "critic": None if critic is None else cpu_copy(accelerator.unwrap_model(critic).state_dict()),
        "optimizers": [cpu_copy(o.state_dict()) for o in optimizers],
        "rng": rngs,
    }
    checkpoints.save(
        iteration,
        lambda directory: torch.save(state, directory / "state.pt"),
        {"iteration": iteration, "prompt_position": iteration},
        blocking=True,
    )
