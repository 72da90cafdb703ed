"""`align self-instruct`: grow an instruction set from seed tasks with a model (Wang et al., 2022).

Each round shows the model a few tasks from the pool (seeds and tasks kept so far) and asks for
one more; a new task is kept if it is well formed and its ROUGE-L overlap with every task in the
pool stays below a threshold. The model then answers each kept task through the chat template,
and the pairs are written as TRL conversational data (`{"messages": [user, assistant]}` JSONL),
ready for `align sft`. Generation goes through a rollout engine: in-process vLLM, a running
`align serve` endpoint, or transformers.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError, InputError
from align.records import jsonl_objects
from rollouts.factory import EngineConfig

if TYPE_CHECKING:
    from rollouts.base import RolloutEngine

logger = logging.getLogger(__name__)

# Tasks a text-only model cannot do (the self-instruct paper's filter list).
UNANSWERABLE = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
                "draw", "plot", "go to", "video", "audio", "flowchart", "diagram")  # fmt: skip
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


@dataclass
class SelfInstructConfig:
    """Grow an instruction set from seed tasks and write TRL `messages` JSONL."""

    seed_tasks: Path
    """JSONL of seed tasks, one object per line with an `instruction` (and optionally a `response`)."""
    model: Path
    """The model's `save_pretrained` directory (its tokenizer's chat template wraps the answers; the
    in-process engines load it; a server must be serving the same checkpoint)."""
    output: Path
    """Where the new conversations go (JSONL, one `{"messages": [...]}` per line)."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """The rollout engine: kind vllm (in-process), server (an `align serve` endpoint) or hf."""
    num_tasks: int = 100
    """Stop after keeping this many new tasks."""
    max_rounds: int = 20
    """Stop after this many rounds even if fewer tasks were kept (a weak model writes junk)."""
    prompts_per_round: int = 32
    """Task-writing prompts sent to the engine per round."""
    examples_per_prompt: int = 3
    """Tasks from the pool shown in each prompt."""
    max_similarity: float = 0.7
    """Drop a task whose ROUGE-L F1 with any task in the pool reaches this (the paper's 0.7)."""
    min_tokens: int = 3
    """Shortest acceptable task, in words (a CJK character counts as one)."""
    max_tokens: int = 150
    """Longest acceptable task, in words."""
    max_new_tokens: int = 64
    """Generation budget per task and per answer."""
    temperature: float = 1.0
    """Sampling temperature for tasks and answers."""
    include_seeds: bool = False
    """Also write the seed tasks that come with a response."""
    seed: int = 0
    """Seed for example selection and sampling."""

    def __post_init__(self) -> None:
        check_exists("seed_tasks", self.seed_tasks)
        check_exists("model", self.model)
        for key in ("num_tasks", "max_rounds", "prompts_per_round", "examples_per_prompt", "min_tokens"):
            check_positive(key, getattr(self, key))
        check_positive("max_new_tokens", self.max_new_tokens)
        check_range("max_similarity", self.max_similarity, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0)
        if self.max_tokens < self.min_tokens:
            raise ConfigError(f"max_tokens: must be >= min_tokens ({self.min_tokens}), got {self.max_tokens}")


def words(text: str) -> list[str]:
    """Lower-cased words, each CJK character on its own (ROUGE over mixed English and Chinese)."""
    return _TOKEN.findall(text.lower())


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence)."""
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


def malformed_reason(task: str, min_tokens: int, max_tokens: int) -> str | None:
    """Why a generated task is unusable, or None if it is well formed."""
    tokens = words(task)
    if not task.strip():
        return "empty"
    if "\ufffd" in task or any(not c.isprintable() for c in task):
        return "undecodable"
    if len(tokens) < min_tokens:
        return "too short"
    if len(tokens) > max_tokens:
        return "too long"
    if not (task[0].isalnum() or "\u3400" <= task[0] <= "\u9fff"):
        return "starts with punctuation"
    if re.search(r"\b(task|instruction)\s*\d+\s*:", task, re.IGNORECASE):
        return "numbered list leaked"
    lowered = f" {' '.join(tokens)} "
    if any(f" {word} " in lowered for word in UNANSWERABLE):
        return "needs a modality the model lacks"
    return None


def read_seed_tasks(path: Path) -> list[dict[str, str]]:
    """Seed tasks from JSONL; a bad line is an `InputError` naming the file and line."""
    tasks = []
    for number, record in jsonl_objects(path):
        instruction = record.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError(f"{path}:{number}: needs a non-empty string field 'instruction'")
        response = record.get("response")
        if response is not None and not isinstance(response, str):
            raise InputError(f"{path}:{number}: 'response' must be a string")
        tasks.append({"instruction": instruction.strip(), **({"response": response} if response else {})})
    if not tasks:
        raise InputError(f"{path}: no seed tasks")
    return tasks


def task_prompt(examples: list[str]) -> str:
    """The task-writing prompt: numbered examples, then the number of the one to write."""
    lines = ["Come up with a series of tasks:"]
    lines += [f"Task {i}: {text}" for i, text in enumerate(examples, start=1)]
    return "\n".join(lines) + f"\nTask {len(examples) + 1}:"


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def grow_tasks(
    engine: RolloutEngine, seeds: list[str], config: SelfInstructConfig
) -> tuple[list[str], dict[str, int]]:
    """Rounds of task writing and filtering; returns the new tasks and counts of what was dropped."""
    from tqdm import tqdm

    from rollouts.base import Sampling

    rng = random.Random(config.seed)
    pool, pool_words, new = list(seeds), [words(s) for s in seeds], []
    dropped: dict[str, int] = {}
    progress = tqdm(total=config.num_tasks, desc="self-instruct tasks", unit="task")
    for round_index in range(config.max_rounds):
        prompts = [
            task_prompt(rng.sample(pool, min(config.examples_per_prompt, len(pool))))
            for _ in range(config.prompts_per_round)
        ]
        sampling = Sampling(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed + round_index,
            logprobs=False,
        )
        for rollout in engine.generate(prompts, sampling):
            task = first_line(rollout.text)
            reason = malformed_reason(task, config.min_tokens, config.max_tokens)
            task_words = words(task)
            if reason is None and any(
                rouge_l(task_words, other) >= config.max_similarity for other in pool_words
            ):
                reason = "near-duplicate"
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            pool.append(task)
            pool_words.append(task_words)
            new.append(task)
            progress.update()
            if len(new) >= config.num_tasks:
                progress.close()
                return new, dropped
    progress.close()
    return new, dropped


def answer_tasks(
    engine: RolloutEngine, tasks: list[str], config: SelfInstructConfig
) -> list[tuple[str, str]]:
    """The model's answer to each task through the chat template; empty answers are dropped."""
    from align.models import load_tokenizer
    from rollouts.base import Sampling

    tokenizer = load_tokenizer(config.model)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in tasks
    ]
    sampling = Sampling(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed, logprobs=False
    )
    rollouts = engine.generate(prompts, sampling) if prompts else []
    return [(t, r.text.strip()) for t, r in zip(tasks, rollouts, strict=True) if r.text.strip()]


def self_instruct(config: SelfInstructConfig, engine: RolloutEngine) -> dict[str, int]:
    """Grow, filter, answer and write; returns counts (kept, answered, and each drop reason)."""
    seeds = read_seed_tasks(Path(config.seed_tasks))
    tasks, dropped = grow_tasks(engine, [s["instruction"] for s in seeds], config)
    pairs = answer_tasks(engine, tasks, config)
    if config.include_seeds:
        pairs = [(s["instruction"], s["response"]) for s in seeds if "response" in s] + pairs
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for task, answer in pairs:
            messages = [{"role": "user", "content": task}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    partial.replace(output)
    stats = {
        "seeds": len(seeds),
        "kept": len(tasks),
        "written": len(pairs),
        "empty answers": len(tasks) - len(pairs),
    }
    stats.update({f"dropped {k}": v for k, v in sorted(dropped.items())})
    logger.info("self-instruct: %s -> %s", ", ".join(f"{k} {v}" for k, v in stats.items()), output)
    return stats


def run_self_instruct(config: SelfInstructConfig) -> dict[str, int]:
    """Build the configured engine on `config.model`, run self-instruct, release the engine."""
    from rollouts.factory import build_engine

    engine = build_engine(config.engine, config.model)
    try:
        return self_instruct(config, engine)
    finally:
        engine.close()
