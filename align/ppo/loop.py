"""`align ppo`: the PPO loop on Accelerate, rollouts from a vLLM (or HF, or server) engine.

`run_ppo` sets a run up (models, reference, reward, engine), resumes its `PPOState` from the latest
checkpoint, then runs `align.ppo.iteration.ppo_iteration` until `iterations`, logging, evaluating on
held-out prompts every `eval_every` and checkpointing every `save_every` iterations on the way.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from align.checkpoint import CHECKPOINTS_DIR, CheckpointManager
from align.distributed import autocast_context, finish_trackers, make_accelerator
from align.models import load_model, load_tokenizer
from align.ppo.advantages import ESTIMATORS
from align.ppo.config import PPOConfig
from align.ppo.critic import TokenCritic
from align.ppo.curves import plot_curves
from align.ppo.diagnostics import SAMPLES, append_samples, samples_markdown
from align.ppo.evaluate import eval_metrics, held_out_quality, write_quality
from align.ppo.experience import RewardSource
from align.ppo.iteration import PPORun, engine_weights, ppo_iteration
from align.ppo.kl_controller import KLController
from align.ppo.prompts import encode_prompt, read_prompts
from align.ppo.state import PPOState
from rollouts.base import RolloutEngine

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
QUALITY = "quality.json"


def make_engine(config: PPOConfig) -> RolloutEngine:
    from rollouts.factory import EngineConfig, build_engine

    engine_config = EngineConfig(
        kind=config.engine,
        base_url=config.server_url or EngineConfig.base_url,
        # A key never sits in a config file: the server's key is read where OpenAI clients read it.
        api_key=os.environ.get("OPENAI_API_KEY"),
        served_model_name=config.server_model,
        max_model_len=config.max_prompt_tokens + config.max_new_tokens,
        kv_cache_gib=config.vllm_kvcache_gib,
        seed=config.seed,
        num_threads=config.num_threads,
    )
    return build_engine(engine_config, config.policy)


def build_state(config: PPOConfig, accelerator, pad_token_id: int) -> PPOState:
    """Policy (LoRA-wrapped if asked), critic and optimizers, prepared by Accelerate; β at its start."""
    from trl.trainer.utils import disable_dropout_in_model

    policy = load_model(config.policy)
    if config.lora_r:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(
            policy, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear")
        )
    critic = None
    if ESTIMATORS[config.advantage].needs_critic:
        source = config.reward_model if config.critic_init == "reward_model" else config.policy
        critic = TokenCritic.from_pretrained(source, pad_token_id)
    # Dropout would make the trainer's log-probs and values differ from the ones the same weights
    # gave at sampling time (TRL's and OpenRLHF's PPO turn it off too).
    for model in (policy, critic):
        if model is not None:
            disable_dropout_in_model(model)
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
    controller = KLController(config.kl_coef, config.kl_target, config.kl_bound)
    return PPOState(policy, critic, optimizers, controller)


def run_ppo(config: PPOConfig, engine: RolloutEngine | None = None) -> Path:
    """Run PPO (or a critic-free variant); returns the directory of the final policy.

    `engine`: a running engine of the same architecture to reuse (tests, notebooks); it receives
    the policy's weights first and is left open. Default: a new one as `config.engine` says.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trackers = [t for t in config.report_to if t != "none"]
    accelerator = make_accelerator(log_with=trackers or None, project_dir=str(out))
    device = accelerator.device
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    tokenizer = load_tokenizer(config.policy)
    records = read_prompts(config.prompts)
    eval_records = read_prompts(config.eval_prompts)[: config.eval_limit] if config.eval_prompts else []
    state = build_state(config, accelerator, tokenizer.pad_token_id)
    # A LoRA policy's reference is its own base weights (adapter off): no second copy in memory.
    reference = None
    if not (config.lora_r and config.reference is None):
        reference = load_model(config.reference or config.policy).to(device).eval().requires_grad_(False)
    reward = RewardSource(
        config.reward_model, config.reward_rule, tokenizer, device, config.reward_rule_weight
    )

    checkpoints = CheckpointManager(out / CHECKPOINTS_DIR, keep=config.keep_checkpoints)
    resumed = config.resume and state.resume(checkpoints, accelerator)
    start = state.iteration
    metrics_path, samples_path = out / METRICS, out / SAMPLES
    if accelerator.is_main_process:
        # A resumed run keeps the rows of the iterations its checkpoint holds and writes the rest again.
        for path in (metrics_path, samples_path):
            if path.exists():
                rows = path.read_text(encoding="utf-8").splitlines()
                kept = [line for line in rows if line.strip() and json.loads(line)["iteration"] <= start]
                path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    accelerator.init_trackers("ppo", config={"advantage": config.advantage, "kl_coef": config.kl_coef})

    final_quality = None  # the last iteration's held-out evaluation, when `eval_every` ran one
    owned = engine is None
    run = PPORun(
        config=config,
        accelerator=accelerator,
        engine=make_engine(config) if owned else engine,
        tokenizer=tokenizer,
        records=records,
        prompt_ids=[encode_prompt(tokenizer, r, config.max_prompt_tokens) for r in records],
        reference=reference,
        reward=reward,
        autocast=autocast_context(config.precision, device.type),
    )
    # An engine started here from `config.policy` already holds the starting weights; one handed
    # in, a server (which may serve anything) and a resumed run need them pushed.
    if resumed or not owned or run.engine_is_shared:
        run.push_weights(state.policy)
    unwrapped = accelerator.unwrap_model(state.policy)
    bar = tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        desc="ppo",
        disable=not accelerator.is_local_main_process,
    )
    try:
        for _ in bar:
            metrics = ppo_iteration(run, state)
            done = state.iteration
            if config.eval_every and done % config.eval_every == 0 and accelerator.is_main_process:
                t_eval = time.perf_counter()
                quality = held_out_quality(config, run.engine, tokenizer, reward, eval_records)
                final_quality = quality if done == config.iterations else None
                metrics.update(eval_metrics(quality), **{"time/eval": time.perf_counter() - t_eval})
            samples = metrics.pop("samples", None)
            accelerator.log({k: v for k, v in metrics.items() if k != "prompts"}, step=done)
            if samples:
                append_samples(samples_path, samples)
                # Trackers take text as it is: TensorBoard shows the table in its text panel.
                accelerator.log({"samples": samples_markdown(done, samples)}, step=done)
            bar.set_postfix(
                reward=f"{metrics['reward_mean']:.3f}",
                kl=f"{metrics['kl']:.3f}",
                clip=f"{metrics['clip_fraction']:.2f}",
            )
            if accelerator.is_main_process:
                with open(metrics_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(metrics) + "\n")
            if config.save_every and done % config.save_every == 0 and done < config.iterations:
                state.save(checkpoints, accelerator)
        if config.eval_prompts is not None and accelerator.is_main_process:
            write_quality(
                config,
                run.engine,
                tokenizer,
                reward,
                reference.named_parameters() if reference is not None else engine_weights(unwrapped, False),
                eval_records,
                out / QUALITY,
                final_quality,
            )
    finally:
        if owned:
            run.engine.close()
    state.save(checkpoints, accelerator)
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
