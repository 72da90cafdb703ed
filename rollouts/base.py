"""The one small protocol every generation engine speaks, and the records it returns.

Engines: in-process vLLM colocated with the trainer, a client of a `vllm serve` endpoint, and a
`transformers.generate` reference. The trainer recomputes every log-prob it learns from; the
engine's are kept to report the trainer/engine mismatch and, with PPO's `rollout_correction`, to
weigh the loss by the truncated ratio of the two (TIS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Sampling:
    """How to sample completions."""

    max_new_tokens: int = 64
    """Upper bound on generated tokens per completion."""
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 disables)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 disables)."""
    n: int = 1
    """Completions per prompt (GRPO/RLOO groups)."""
    seed: int | None = None
    """Seed for reproducible sampling."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end a completion (the tokenizer's EOS always does)."""
    logprobs: bool = True
    """Return the engine's log-prob of each sampled token."""


@dataclass
class Rollout:
    """One completion of one prompt."""

    prompt_index: int
    """Index of the prompt in the `generate` call."""
    prompt_token_ids: list[int]
    token_ids: list[int]
    """Completion tokens, including the stop token when the completion stopped on one."""
    text: str
    """The decoded completion, without special tokens."""
    logprobs: list[float] | None
    """The engine's log-prob of each completion token (None if not requested)."""
    finish_reason: Literal["stop", "length"]


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates rollouts and accepts new policy weights without a restart."""

    def generate(self, prompts: Sequence[str | list[int]], sampling: Sampling) -> list[Rollout]:
        """Complete each prompt (text, or token ids) `sampling.n` times.

        Returns len(prompts) * n rollouts, grouped by prompt in prompt order.
        """
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights with the policy's (HF parameter names)."""
        ...

    def close(self) -> None:
        """Release the engine (processes, memory, connections)."""
        ...
