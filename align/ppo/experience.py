"""Experience making: generate with the engine, score, reference log-probs, KL penalty, values.

A batch lays every sequence out as [left-padded prompt | right-padded response], so response
token t sits in the same column for every row and the logits predicting it sit one column left.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from rollouts.base import Rollout

log = logging.getLogger(__name__)


@dataclass
class Experience:
    """One iteration's rollouts as tensors; everything the update epochs need."""

    input_ids: torch.Tensor
    """[B, P+R] prompt (left-padded) followed by response (right-padded)."""
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    """[B, R] 1 on generated tokens."""
    old_logprobs: torch.Tensor
    """[B, R] the policy's log-probs when sampling (recomputed by the trainer)."""
    ref_logprobs: torch.Tensor
    scores: torch.Tensor
    """[B] sequence scores (reward model and/or rule)."""
    values: torch.Tensor
    """[B, R] critic values (zeros without a critic)."""
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    engine_logprobs: torch.Tensor | None = None
    """[B, R] the engine's log-probs of the sampled tokens (None when the engine gave none): the
    rollout correction weighs the policy loss by exp(old_logprobs - engine_logprobs)."""

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def select(self, index: torch.Tensor) -> Experience:
        """The rows `index`, without the columns all of them pad: the prompts' common left padding
        and the responses' common right padding (a micro-batch of short rows is a small batch)."""
        start, response_width = trimmed_columns(self.attention_mask[index], self.response_mask[index])
        stop = self.prompt_width + response_width
        selected = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value.dim() == 1:
                selected[f.name] = None if value is None else value[index]
            elif f.name in ("input_ids", "attention_mask"):
                selected[f.name] = value[index, start:stop]
            else:
                selected[f.name] = value[index, :response_width]
        return Experience(**selected)


def trimmed_columns(attention_mask: torch.Tensor, response_mask: torch.Tensor) -> tuple[int, int]:
    """First column any row attends to, and the longest response in the rows."""
    attended = attention_mask.any(0).nonzero()
    start = int(attended[0]) if len(attended) else 0
    return start, max(1, int(response_mask.sum(1).max()))


def length_sorted_chunks(attention_mask: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices in chunks of `size`, longest rows first: rows of a chunk have similar lengths, so
    `Experience.select` trims most of the padding a random chunk would carry."""
    order = attention_mask.sum(1).argsort(descending=True, stable=True)
    return list(order.split(size))


def pad_rollouts(rollouts: Sequence[Rollout], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and response_mask of the [prompt | response] layout."""
    width_p = max(len(r.prompt_token_ids) for r in rollouts)
    width_r = max(1, max(len(r.token_ids) for r in rollouts))
    ids, attn, resp = [], [], []
    for r in rollouts:
        lp, lr = len(r.prompt_token_ids), len(r.token_ids)
        ids.append([pad_id] * (width_p - lp) + r.prompt_token_ids + r.token_ids + [pad_id] * (width_r - lr))
        attn.append([0] * (width_p - lp) + [1] * (lp + lr) + [0] * (width_r - lr))
        resp.append([1] * lr + [0] * (width_r - lr))
    return torch.tensor(ids), torch.tensor(attn), torch.tensor(resp, dtype=torch.float32)


def pad_engine_logprobs(rollouts: Sequence[Rollout]) -> torch.Tensor | None:
    """The engines' log-probs in the response layout of `pad_rollouts`, or None if one has none."""
    if any(r.logprobs is None for r in rollouts):
        return None
    width_r = max(1, max(len(r.token_ids) for r in rollouts))
    rows = [r.logprobs[: len(r.token_ids)] for r in rollouts]
    return torch.tensor([row + [0.0] * (width_r - len(row)) for row in rows], dtype=torch.float32)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_logits(
    model, input_ids, attention_mask, response_width: int, temperature: float
) -> torch.Tensor:
    """Logits / T predicting each response token, [B, R, V]: as the engine samples them. The LM head
    runs on those positions only (`logits_to_keep`), not on the prompt's."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
        logits_to_keep=response_width + 1,
    )
    logits = out.logits[:, :-1].float()
    return logits / temperature if temperature != 1.0 else logits


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def log_probs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `tokens` [B, R] and the per-token entropy [B, R], from one log-softmax over the
    vocabulary; the entropy keeps no graph unless `entropy_grad` (it is a bonus in the loss)."""
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with contextlib.nullcontext() if entropy_grad else torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


def response_values(critic, input_ids, attention_mask, response_width: int) -> torch.Tensor:
    """The critic's (`align.ppo.critic.TokenCritic`, maybe wrapped) value of the state before each
    response token, [B, R]."""
    values = critic(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
    )
    return values[:, -response_width - 1 : -1].float()


def adapter_disabled(model) -> contextlib.AbstractContextManager:
    """The PEFT model `model` (maybe wrapped by Accelerate) with its adapter off: the base weights."""
    return getattr(model, "module", model).disable_adapter()


class RewardSource:
    """Scores replies: the reward model's scalar, a rule from `rewards.rules`, or their weighted sum.

    The RM sees the conversation rendered by the chat template exactly as it saw its training
    pairs (`rewards.model.score`); a rule sees the prompt's messages and the reply's text.
    """

    def __init__(
        self,
        reward_model: Path | None,
        rule: str | None,
        tokenizer,
        device: torch.device,
        rule_weight: float = 1.0,
    ):
        self.model = None
        self.rule_weight = rule_weight
        self.tokenizer = tokenizer
        if reward_model is not None:
            from rewards.model import load_reward_model

            self.model = load_reward_model(reward_model).to(device).requires_grad_(False)
        self.rule = None if rule is None else getattr(importlib.import_module("rewards.rules"), rule)

    def model_scores(self, texts: Sequence[str], records: Sequence[dict]) -> torch.Tensor:
        from rewards.model import score

        conversations = []
        for text, record in zip(texts, records, strict=True):
            messages = record.get("messages") or record["prompt"]
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            conversations.append([*messages, {"role": "assistant", "content": text}])
        return torch.tensor(score(self.model, self.tokenizer, conversations))

    def rule_scores(self, texts: Sequence[str], records: Sequence[dict]) -> torch.Tensor:
        """`rule(prompt, reply)` per row (None, for a prompt that is not a demo task, counts 0)."""
        return torch.tensor(
            [
                float(self.rule(r.get("messages") or r["prompt"], text) or 0.0)
                for text, r in zip(texts, records, strict=True)
            ]
        )

    def components(self, texts: Sequence[str], records: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The reward's parts, unweighted: `rm` (the reward model's score) and `rule` (the rule's)."""
        parts = {}
        if self.model is not None:
            parts["rm"] = self.model_scores(texts, records)
        if self.rule is not None:
            parts["rule"] = self.rule_scores(texts, records)
        return parts

    def combine(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reward of `components`: RM score + rule_weight x rule score."""
        total = torch.zeros(len(next(iter(parts.values()))))
        if "rm" in parts:
            total = total + parts["rm"]
        if "rule" in parts:
            total = total + self.rule_weight * parts["rule"]
        return total

    def __call__(self, texts: Sequence[str], records: Sequence[dict]) -> torch.Tensor:
        return self.combine(self.components(texts, records))


@torch.no_grad()
def make_experience(
    rollouts: Sequence[Rollout],
    records: Sequence[dict],
    policy,
    reference,
    critic,
    reward: RewardSource,
    pad_id: int,
    temperature: float,
    micro_batch_size: int,
    device: torch.device,
    autocast=contextlib.nullcontext,
    old_logprobs: bool = True,
    scores: torch.Tensor | None = None,
) -> Experience:
    """Tensors, scores, old/reference log-probs and values for one iteration's rollouts.

    `reference`: the frozen reference model, or None when it is the policy with its LoRA adapter
    disabled (one model in memory). `autocast`: the context the forward passes run in (bf16 mixed
    precision). `old_logprobs=False` skips the policy's pass, for an update whose first pass is
    on-policy and fills them in (`train_on`); they stay zeros until then. `scores`: the sequences'
    scores when the caller has them already (the loop scores before it keeps a rollout); else
    `reward` scores the texts.
    """
    input_ids, attention_mask, response_mask = (t.to(device) for t in pad_rollouts(rollouts, pad_id))
    if scores is None:
        with autocast():
            scores = reward([r.text for r in rollouts], records)
    engine_logprobs = pad_engine_logprobs(rollouts)
    experience = Experience(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        old_logprobs=torch.zeros_like(response_mask),
        ref_logprobs=torch.zeros_like(response_mask),
        scores=scores.to(device),
        values=torch.zeros_like(response_mask),
        engine_logprobs=None if engine_logprobs is None else engine_logprobs.to(device) * response_mask,
    )
    for rows in length_sorted_chunks(attention_mask, micro_batch_size):
        sub = experience.select(rows)
        width = sub.response_mask.shape[1]
        tokens = sub.input_ids[:, -width:]
        with autocast():
            if old_logprobs:
                logits = response_logits(policy, sub.input_ids, sub.attention_mask, width, temperature)
                experience.old_logprobs[rows, :width] = token_logprobs(logits, tokens)
            with contextlib.nullcontext() if reference is not None else adapter_disabled(policy):
                logits = response_logits(
                    reference if reference is not None else policy,
                    sub.input_ids,
                    sub.attention_mask,
                    width,
                    temperature,
                )
            experience.ref_logprobs[rows, :width] = token_logprobs(logits, tokens)
            if critic is not None:
                experience.values[rows, :width] = response_values(
                    critic, sub.input_ids, sub.attention_mask, width
                )
    for tensor in (experience.old_logprobs, experience.ref_logprobs, experience.values):
        tensor.mul_(response_mask)
    return experience


def logprob_mismatch(rollouts: Sequence[Rollout], trainer_logprobs: torch.Tensor) -> dict[str, float]:
    """Mean and largest gap between the engine's log-probs of the sampled tokens and the trainer's."""
    gaps = [
        abs(engine_lp - trainer_lp)
        for r, row in zip(rollouts, trainer_logprobs.tolist(), strict=True)
        if r.logprobs is not None
        for engine_lp, trainer_lp in zip(r.logprobs, row, strict=False)
    ]
    return {
        "logprob_mismatch_mean": sum(gaps) / len(gaps) if gaps else float("nan"),
        "logprob_mismatch_max": max(gaps) if gaps else float("nan"),
    }
