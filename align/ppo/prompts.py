"""PPO's prompts: reading the JSONL, chat-templating, and the resumable per-iteration order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from align.records import read_records
from rewards.messages import prompt_problem

MAX_BAD_FRACTION = 0.05
"""Bad prompt rows are skipped (logged with file and line); more than this share refuses the file."""


def check_prompt_record(record: dict) -> str | None:
    """What is wrong with a prompt record, or None: it needs `prompt` (user text, or chat turns
    ending in a user turn) or `messages` (the same chat)."""
    if "messages" in record:
        problem = (
            prompt_problem(record["messages"])
            if isinstance(record["messages"], list)
            else "'messages' must be a list of turns"
        )
        return None if problem is None else f"'messages': {problem}"
    if "prompt" in record:
        problem = prompt_problem(record["prompt"])
        return None if problem is None else f"'prompt': {problem}"
    return f"needs a 'prompt' or 'messages' field (fields: {', '.join(sorted(record)) or 'none'})"


def read_prompts(path: Path) -> list[dict]:
    """The good prompt records of a JSONL or Parquet file (`align.records`' bad-row rule)."""
    return read_records(path, check_prompt_record, MAX_BAD_FRACTION)


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


def refill_batch(
    iteration: int, draw: int, per_iteration: int, n_prompts: int, seed: int, max_draws: int
) -> list[int]:
    """The prompts of dynamic sampling's extra draw `draw` (from 1) of an iteration: a second seeded
    order of its own, a pure function of (iteration, draw) as `prompt_batch` is of the iteration, so
    a resumed run refills its batches with the prompts an uninterrupted one would."""
    return prompt_batch(iteration * max_draws + draw - 1, per_iteration, n_prompts, seed + 1)
