"""The Python API for notebooks and scripts: the very objects the `align` command uses.

    from align import api
    config = api.config("sft", "scripts/recipes/demo.yaml", run_dir="runs/nb", max_steps=50)
    api.run(config)                       # the same function `align sft` calls
    rewards = api.score(rm, tokenizer, conversations)
    engine = api.engine("vllm", "runs/nb/sft")
    api.run(api.config("eval report", "scripts/recipes/demo.yaml", run_dir="runs/nb"))

Every stage has exactly one implementation, reached through `align.cli.COMMANDS`; this module
only finds it by name or by config type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align.cli import COMMANDS, Command, load_command_config, resolve
from align.models import build_model, load_model, load_tokenizer, train_tokenizer

__all__ = [
    "build_model",
    "commands",
    "config",
    "engine",
    "load_model",
    "load_tokenizer",
    "run",
    "score",
    "train_tokenizer",
]


def commands() -> dict[str, Command]:
    """Every runnable command by its name as written on the command line (`label export`)."""
    found: dict[str, Command] = {}

    def walk(items: tuple[Command, ...], path: list[str]) -> None:
        for command in items:
            if command.config:
                found[" ".join([*path, command.name])] = command
            walk(command.children, [*path, command.name])

    walk(COMMANDS, [])
    return found


def config(
    command: str, recipe: str | Path | None = None, run_dir: str | None = None, **overrides: Any
) -> Any:
    """The validated config of `command` (e.g. "sft", "label export") from a recipe and overrides.

    `run_dir` replaces the recipe's own `run_dir` in `${run_dir}` substitutions.
    """
    return load_command_config(command.split(), None if recipe is None else str(recipe), overrides, run_dir)


def run(config: Any) -> Any:
    """Run the stage whose config this is (the function its `align` command runs)."""
    for command in commands().values():
        if type(config) is resolve(command.config):
            return resolve(command.run)(config)
    raise TypeError(f"{type(config).__name__} is not the config of any align command")


def score(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], **kwargs: Any
) -> list[float]:
    """Reward-model scores for a batch of conversations (see `rewards.model.score`)."""
    from rewards.model import score as score_conversations

    return score_conversations(model, tokenizer, conversations, **kwargs)


def engine(kind: str, model: str | Path, **settings: Any) -> Any:
    """A rollout engine (`vllm` in-process, `server` client, or `hf`) over a model directory."""
    from rollouts.factory import EngineConfig, build_engine

    return build_engine(EngineConfig(kind=kind, **settings), model)
