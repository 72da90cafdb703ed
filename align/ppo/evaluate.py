"""Fresh-sample quality of a policy: mean reward-model score and rule correctness on held-out prompts.

`align ppo` runs it every `eval_every` iterations on the policy, and at the end on the reference
(SFT) and the final policy (`quality.json`); tests and notebooks compare any two checkpoints with
`sample_quality`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from align.models import load_model, load_tokenizer
from align.ppo.config import PPOConfig
from align.ppo.experience import RewardSource
from align.ppo.prompts import encode_prompt, prompt_messages, read_prompts
from rollouts.base import RolloutEngine, Sampling

log = logging.getLogger(__name__)


@torch.no_grad()
def engine_quality(
    engine: RolloutEngine,
    tokenizer,
    records: Sequence[dict],
    reward: RewardSource | None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    samples_per_prompt: int = 2,
    seed: int = 0,
    max_prompt_tokens: int = 256,
) -> dict[str, float | dict[str, float]]:
    """Sample the engine's current weights on `records`: `correct` (share of the `judged` samples that
    are right, or follow all their constraints), the same per task kind or constraint type in
    `correct_by_kind` (the mix of kinds hides a change in one), `length` (tokens) and,
    with a reward model in `reward`, `reward_mean` (its score alone, no rule added)."""
    from rewards.rules import correct_by_kind

    rollouts = engine.generate(
        [encode_prompt(tokenizer, r, max_prompt_tokens) for r in records],
        Sampling(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            n=samples_per_prompt,
            seed=seed,
            stop_token_ids=(tokenizer.eos_token_id,),
        ),
    )
    by_kind: dict[str, list[bool]] = {}
    judged = []
    for rollout in rollouts:
        messages = prompt_messages(records[rollout.prompt_index])
        verdicts = correct_by_kind(messages, rollout.text)
        if verdicts:  # right overall = right on every kind it asks (`rules.is_correct`)
            judged.append(all(verdicts.values()))
        for kind, correct in verdicts.items():
            by_kind.setdefault(kind, []).append(correct)
    result = {
        "correct": sum(judged) / max(1, len(judged)),
        "judged": len(judged),
        "correct_by_kind": {kind: sum(c) / len(c) for kind, c in sorted(by_kind.items())},
        "length": sum(len(r.token_ids) for r in rollouts) / len(rollouts),
        "samples": len(rollouts),
    }
    if reward is not None and reward.model is not None:
        scores = reward.model_scores([r.text for r in rollouts], [records[r.prompt_index] for r in rollouts])
        result["reward_mean"] = scores.mean().item()
    return result


def sample_quality(
    policy_dir: Path,
    prompts: Path,
    reward_model: Path | None,
    limit: int = 64,
    engine: RolloutEngine | None = None,
    **sampling,
) -> dict[str, float | dict[str, float]]:
    """`engine_quality` of a saved policy on the first `limit` prompts of a JSONL file.

    `engine`: a running engine to reuse (its weights are replaced by the policy's); default: a
    `transformers.generate` engine on the policy. `sampling`: engine_quality's keyword arguments.
    """
    from rollouts.hf_engine import HFEngine

    tokenizer = load_tokenizer(policy_dir)
    model = load_model(policy_dir).eval()
    if engine is None:
        engine = HFEngine(model, tokenizer)
    else:
        engine.load_weights(model.named_parameters())
    reward = None
    if reward_model is not None:
        reward = RewardSource(reward_model, None, tokenizer, torch.device("cpu"))
    return engine_quality(engine, tokenizer, read_prompts(prompts)[:limit], reward, **sampling)


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
