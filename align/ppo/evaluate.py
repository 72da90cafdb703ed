"""Fresh-sample quality of a policy: mean reward-model score and rule correctness on held-out prompts.

`align ppo` runs it at the end on the reference (SFT) and the final policy (`quality.json`); tests
and notebooks compare any two checkpoints with `sample_quality`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from align.models import load_model, load_tokenizer
from align.ppo.experience import RewardSource
from align.ppo.prompts import encode_prompt, prompt_messages, read_prompts
from rollouts.base import RolloutEngine, Sampling


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
