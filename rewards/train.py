"""`align rm`: train the reward model with TRL's RewardTrainer and report held-out accuracy.

Build (SFT backbone + new scalar head, or LoRA adapters on it), read and check the preferences,
measure pairwise accuracy before training, train with the Bradley-Terry loss (optionally with
margins), measure again overall and per criterion, save at `output_dir` with `rm_metrics.json`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from align.errors import InputError
from align.finite import FiniteGradients
from align.models import load_tokenizer, save_trained
from align.records import check_lengths, load_splits
from rewards.label_config import CRITERIA
from rewards.messages import CHAT_ROLES, turns_problem
from rewards.model import build_reward_model, score
from rewards.reward_config import RewardStageConfig

log = logging.getLogger(__name__)


def as_messages(value: Any, role: str) -> list[dict[str, str]] | None:
    """A string as one message of `role`, a list of turns as is; None when malformed or empty.
    A reply (`role` assistant) has assistant turns only; a prompt may hold any chat role."""
    if isinstance(value, str):
        return [{"role": role, "content": value}] if value.strip() else None
    roles = ("assistant",) if role == "assistant" else CHAT_ROLES
    return None if turns_problem(value, roles) is not None else value


def check_preference(row: dict[str, Any]) -> str | None:
    """What is wrong with a preference row, or None (the rule of `RewardStageConfig`'s docstring)."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)} (fields: {', '.join(sorted(row)) or 'none'})"
    for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
        if as_messages(row[key], role) is None:
            turns = "assistant turns" if role == "assistant" else "messages"
            return f"'{key}' is empty or not a string / list of {turns}"
    if as_messages(row["chosen"], "assistant") == as_messages(row["rejected"], "assistant"):
        return "chosen == rejected (no preference to learn)"
    criterion = row.get("criterion")
    if criterion is not None and criterion not in CRITERIA:
        return f"criterion {criterion!r} is not one of {', '.join(CRITERIA)}"
    margin = row.get("margin")
    if margin is not None and (
        isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < math.inf
    ):
        return f"margin {margin!r} must be a finite number >= 0"
    return None


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """A checked row in conversational form, with `margin` (0 when absent) and `criterion`."""
    return {
        "prompt": as_messages(row["prompt"], "user"),
        "chosen": as_messages(row["chosen"], "assistant"),
        "rejected": as_messages(row["rejected"], "assistant"),
        "margin": float(row.get("margin") or 0.0),
        "criterion": row.get("criterion") or "overall",
    }


def _ranking(row: dict[str, Any], first: str, second: str) -> str:
    return json.dumps([row["prompt"], row[first], row[second]], sort_keys=True)


def pair_key(row: dict[str, Any]) -> str:
    """The prompt and the two replies, in either order: copies of one pair share it."""
    return min(_ranking(row, "chosen", "rejected"), _ranking(row, "rejected", "chosen"))


def contradicting_rows(rows: list[dict[str, Any]]) -> int:
    """How many rows rank a pair the other way round from another row (same prompt and replies)."""
    ranked = {_ranking(r, "chosen", "rejected") for r in rows}
    return sum(_ranking(r, "rejected", "chosen") in ranked for r in rows)


def preference_splits(config: RewardStageConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The checked, normalised training and held-out pairs; copies of a pair stay on one side."""
    train, held_out = load_splits(
        config.train_file,
        config.eval_file,
        config.eval_fraction,
        config.seed,
        check_preference,
        config.max_bad_fraction,
        group=lambda row: pair_key(normalise(row)),
    )
    return [normalise(r) for r in train], [normalise(r) for r in held_out]


def pairwise_accuracy(model: Any, tokenizer: Any, pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Fraction of pairs where chosen outscores rejected: `overall` and per criterion present."""
    chosen = score(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = score(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    hits: dict[str, list[bool]] = defaultdict(list)
    for pair, c, r in zip(pairs, chosen, rejected, strict=True):
        hits["overall"].append(c > r)
        if pair["criterion"] != "overall":
            hits[pair["criterion"]].append(c > r)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(hits.items())}


def pair_length(tokenizer: Any, pair: dict[str, Any]) -> int:
    """Tokens of the longer of a pair's two conversations, as the trainer's chat template renders them."""
    return max(
        len(tokenizer.apply_chat_template(pair["prompt"] + pair[side], tokenize=True, return_dict=False))
        for side in ("chosen", "rejected")
    )


def fitting_pairs(
    pairs: list[dict[str, Any]], tokenizer: Any, config: RewardStageConfig, split: str
) -> list[dict[str, Any]]:
    """The pairs within `max_length` tokens. TRL's trainer would drop the others without a word;
    here they are counted, and more than `max_bad_fraction` of them refuses the data."""
    lengths = [pair_length(tokenizer, p) for p in pairs]
    what = f"{config.train_file}: {split} pairs (left out)"
    check_lengths(lengths, config.max_length, config.max_bad_fraction, what, config.truncate)
    kept = [p for p, n in zip(pairs, lengths, strict=True) if n <= config.max_length]
    if not kept:
        raise InputError(f"{what}: none of the {len(pairs)} fits max_length={config.max_length} tokens")
    return kept


def run_reward_training(config: RewardStageConfig) -> Path:
    """Train a reward model from `config.model` on `config.train_file`; returns the output directory."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    tokenizer = load_tokenizer(config.model)
    train, held_out = preference_splits(config)
    train = fitting_pairs(train, tokenizer, config, "training")
    log.info("reward model on %d pairs, %d held out", len(train), len(held_out))
    contradicting = contradicting_rows(train + held_out)
    if contradicting:
        log.warning(
            "%s: %d rows rank a pair the other way round from another row (per-criterion verdicts, "
            "e.g. `align label export --criteria` with several criteria); one score cannot fit both, "
            "so these cap the accuracy. Export `overall` alone for a scalar reward model.",
            config.train_file,
            contradicting,
        )
    columns = ["prompt", "chosen", "rejected", *(["margin"] if config.use_margin else [])]
    # The new head's random init comes from the global generator: seed it, or two runs of one
    # config start apart (held-out accuracy varied by ~0.02 between such runs of the demo RM).
    set_seed(config.seed)
    model = build_reward_model(config.model, **config.model_kwargs())
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        **config.trainer_arguments(),
        center_rewards_coefficient=config.center_rewards_coefficient,
        dataset_num_proc=None,
    )
    peft_config = config.peft_config("SEQ_CLS")
    if peft_config is not None:
        peft_config.modules_to_save = ["score"]  # the new head is trained in full, saved with the adapter
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in train]),
        eval_dataset=Dataset.from_list([{k: r[k] for k in columns} for r in held_out]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[FiniteGradients()],
    )
    resume = config.last_checkpoint()
    before_file = config.checkpoint_dir / "accuracy_before.json"
    if resume is None or not before_file.exists():
        before = pairwise_accuracy(trainer.model, tokenizer, held_out)
        if trainer.is_world_process_zero():
            before_file.parent.mkdir(parents=True, exist_ok=True)
            before_file.write_text(json.dumps(before))
    else:
        log.info("resuming from %s", resume)
        before = json.loads(before_file.read_text())
    trainer.train(resume_from_checkpoint=resume)
    after = pairwise_accuracy(trainer.model, tokenizer, held_out)
    metrics = {
        "accuracy_before": before,
        "accuracy": after,
        "train_pairs": len(train),
        "eval_pairs": len(held_out),
        "processes": trainer.args.world_size,
    }
    out = save_trained(trainer, tokenizer, config.output_dir, {"rm_metrics.json": metrics})
    log.info(
        "held-out pairwise accuracy %s (before training %s)",
        ", ".join(f"{k}={v:.3f}" for k, v in after.items()),
        before["overall"],
    )
    return out
