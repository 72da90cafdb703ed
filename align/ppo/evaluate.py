"""Fresh-sample quality of a policy: mean reward-model score and rule correctness on held-out prompts.

Used to compare the SFT model with a PPO policy (tests, recipes, reports).
"""

from __future__ import annotations

from pathlib import Path

import torch

from align.models import load_model, load_tokenizer
from align.ppo.experience import RewardSource
from align.ppo.loop import encode_prompt, prompt_messages, read_prompts
from rollouts.base import RolloutEngine, Sampling


@torch.no_grad()
def sample_quality(
    policy_dir: Path,
    prompts: Path,
    reward_model: Path | None,
    limit: int = 64,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    samples_per_prompt: int = 2,
    seed: int = 0,
    engine: RolloutEngine | None = None,
) -> dict[str, float]:
    """Sample the first `limit` prompts; `reward_mean` (RM), `correct` (share), `length` (tokens).

    `engine`: a running engine to reuse (its weights are replaced by the policy's); default: a
    `transformers.generate` engine on the policy.
    """
    from rewards.rules import is_correct
    from rollouts.hf_engine import HFEngine

    tokenizer = load_tokenizer(policy_dir)
    records = read_prompts(prompts)[:limit]
    model = load_model(policy_dir).eval()
    if engine is None:
        engine = HFEngine(model, tokenizer)
    else:
        engine.load_weights(model.named_parameters())
    rollouts = engine.generate(
        [encode_prompt(tokenizer, r, 256) for r in records],
        Sampling(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            n=samples_per_prompt,
            seed=seed,
            stop_token_ids=(tokenizer.eos_token_id,),
        ),
    )
    correct = [is_correct(prompt_messages(records[r.prompt_index]), r.text) for r in rollouts]
    judged = [c for c in correct if c is not None]
    result = {
        "correct": sum(judged) / max(1, len(judged)),
        "length": sum(len(r.token_ids) for r in rollouts) / len(rollouts),
    }
    if reward_model is not None:
        reward = RewardSource(reward_model, None, tokenizer, torch.device("cpu"))
        scores = reward([r.text for r in rollouts], [records[r.prompt_index] for r in rollouts])
        result["reward_mean"] = scores.mean().item()
    return result
