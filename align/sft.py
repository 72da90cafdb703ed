"""`align sft`: supervised fine-tuning on multi-turn conversations with TRL's SFTTrainer.

Build (tokenizer with the ChatML template, data with bad rows reported, model or LoRA adapters),
measure the base (held-out loss, and rule-judged task accuracy when prompts are given), train
(resuming from the last checkpoint), measure again, save the model at `output_dir`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from align.errors import InputError
from align.finite import FiniteGradients
from align.models import load_tokenizer, save_trained
from align.records import check_lengths, load_splits, read_records
from align.sft_config import SFTStageConfig
from rewards.messages import turns_problem

log = logging.getLogger(__name__)


def check_conversation(row: dict[str, Any]) -> str | None:
    """What is wrong with an SFT row, or None (the rule of `SFTStageConfig`'s docstring)."""
    messages = row.get("messages")
    if messages is None:
        return f"no 'messages' field (fields: {', '.join(sorted(row)) or 'none'})"
    problem = turns_problem(messages)
    if problem is not None:
        return f"'messages' {problem}"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn (nothing to learn from)"
    return None


def check_prompt(row: dict[str, Any]) -> str | None:
    """What is wrong with a prompt row (`{"prompt": [...messages]}` ending in a user turn), or None."""
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        return "'prompt' must be a non-empty list of messages"
    if prompt[-1].get("role") != "user":
        return "the prompt must end with a user turn"
    return check_conversation({"messages": [*prompt, {"role": "assistant", "content": "-"}]})


def generate_replies(model: Any, tokenizer: Any, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy replies of a causal LM to chat prompts, in batches, left-padded."""
    # Left padding for generation, on this call only: the tokenizer is shared and saved with the model.
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return _generate_replies(model, tokenizer, prompts, max_new_tokens)
    finally:
        tokenizer.padding_side = padding_side


def _generate_replies(
    model: Any, tokenizer: Any, prompts: list[list[dict]], max_new_tokens: int
) -> list[str]:
    import torch
    from tqdm import tqdm

    replies: list[str] = []
    model.eval()
    for start in tqdm(range(0, len(prompts), 32), desc="generating", leave=False):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts[start : start + 32]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        replies += tokenizer.batch_decode(new, skip_special_tokens=True)
    return [r.strip() for r in replies]


def rule_accuracy(model: Any, tokenizer: Any, prompts: list[list[dict]], max_new_tokens: int) -> float:
    """Fraction of prompts whose greedy reply the rule judge (`rewards.rules.is_correct`) accepts."""
    from rewards.rules import is_correct

    replies = generate_replies(model, tokenizer, prompts, max_new_tokens)
    return sum(bool(is_correct(p, r)) for p, r in zip(prompts, replies, strict=True)) / len(prompts)


def run_sft(config: SFTStageConfig) -> Path:
    """Fine-tune `config.model` on `config.train_file`; returns the output directory."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(config.model)
    if config.assistant_only_loss and "generation" not in (tokenizer.chat_template or ""):
        raise InputError(
            f"{config.model}: the tokenizer's chat template has no {{% generation %}} markers, which "
            "assistant_only_loss needs; use align.models.CHAT_TEMPLATE or assistant_only_loss: false"
        )
    train, held_out = load_splits(
        config.train_file,
        config.eval_file,
        config.eval_fraction,
        config.seed,
        check_conversation,
        config.max_bad_fraction,
    )
    lengths = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in train
    ]
    what = f"{config.train_file}: training conversations (cut to max_length)"
    check_lengths(lengths, config.max_length, config.max_bad_fraction, what, config.truncate)
    log.info("SFT on %d conversations, %d held out", len(train), len(held_out))
    model = AutoModelForCausalLM.from_pretrained(str(config.model), **config.model_kwargs())
    model.config.pad_token_id = tokenizer.pad_token_id
    args = SFTConfig(
        **config.trainer_arguments(),
        packing=config.packing,
        assistant_only_loss=config.assistant_only_loss,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in train]),
        eval_dataset=Dataset.from_list([{"messages": r["messages"]} for r in held_out]),
        processing_class=tokenizer,
        peft_config=config.peft_config("CAUSAL_LM"),
        callbacks=[FiniteGradients()],
    )
    prompts = None
    if config.accuracy_prompts is not None:
        rows = read_records(config.accuracy_prompts, check_prompt, config.max_bad_fraction)
        prompts = [r["prompt"] for r in rows[: config.accuracy_samples]]
    resume = config.last_checkpoint()
    base_file = config.checkpoint_dir / "base_metrics.json"
    if resume is None or not base_file.exists():
        base = {"eval_loss": trainer.evaluate()["eval_loss"]}
        if prompts:
            base["accuracy"] = rule_accuracy(trainer.model, tokenizer, prompts, config.max_new_tokens)
        if trainer.is_world_process_zero():
            base_file.parent.mkdir(parents=True, exist_ok=True)
            base_file.write_text(json.dumps(base))
    else:
        log.info("resuming from %s", resume)
        base = json.loads(base_file.read_text())
    trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, Any] = {
        "eval_loss_base": base["eval_loss"],
        "eval_loss": trainer.evaluate()["eval_loss"],
        "train_conversations": len(train),
        "eval_conversations": len(held_out),
        "processes": trainer.args.world_size,
    }
    if prompts:
        metrics["accuracy_base"] = base["accuracy"]
        metrics["accuracy"] = rule_accuracy(trainer.model, tokenizer, prompts, config.max_new_tokens)
        metrics["accuracy_prompts"] = len(prompts)
    out = save_trained(trainer, tokenizer, config.output_dir, {"sft_metrics.json": metrics})
    log.info("SFT done: %s", json.dumps(metrics))
    return out
