"""PPO's prompts: reading the JSONL, chat-templating, and the resumable per-iteration order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from align.errors import InputError
from align.records import jsonl_objects


def read_prompts(path: Path) -> list[dict]:
    """The prompt records of a JSONL file; each needs `prompt` (text or a chat) or `messages` (a chat)."""
    records = []
    for number, record in jsonl_objects(path):
        if not ("prompt" in record or "messages" in record):
            raise InputError(f"{path}:{number}: needs a `prompt` or `messages` field")
        records.append(record)
    if not records:
        raise InputError(f"{path}: no prompts")
    return records


def prompt_messages(record: dict) -> list[dict[str, str]] | str:
    """A record's conversation so far (`messages`, or `prompt` as a chat or as plain user text)."""
    return record.get("messages") or record["prompt"]


def encode_prompt(tokenizer, record: dict, max_tokens: int) -> list[int]:
    """The chat-templated prompt up to the assistant's turn, truncated on the left."""
    messages = prompt_messages(record)
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids[-max_tokens:]


def prompt_batch(iteration: int, per_iteration: int, n_prompts: int, seed: int) -> list[int]:
    """The prompt indices of an iteration: a seeded shuffle per pass, a pure function of the position.

    Resuming at iteration k therefore sees exactly the prompts an uninterrupted run would.
    """
    indices = []
    for position in range(iteration * per_iteration, (iteration + 1) * per_iteration):
        epoch, offset = divmod(position, n_prompts)
        order = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        indices.append(int(order[offset]))
    return indices
