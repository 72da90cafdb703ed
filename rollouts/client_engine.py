"""A rollout engine that generates through a vLLM OpenAI-compatible server (`align serve`).

Prompts go out as text or token ids in concurrent `/v1/completions` requests; completions come back
with their token ids (`return_token_ids`) and the sampled tokens' log-probs.
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

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_concurrency: int = 256,
    ) -> None:
        """`base_url` like `http://127.0.0.1:8000`; `model` is the server's served model name."""
        import httpx
        from openai import OpenAI

        self.base_url, self.model, self.max_concurrency = base_url.rstrip("/"), model, max_concurrency
        self.api_key, self._weight_dir_path = api_key, None
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self.client = OpenAI(
            base_url=self.base_url + "/v1",
            api_key=api_key or "EMPTY",
            timeout=timeout,
            http_client=httpx.Client(limits=limits, timeout=timeout),
        )

    def generate(self, prompts: Sequence[str | list[int]], sampling: Sampling) -> list[Rollout]:
        """Complete each prompt `sampling.n` times; rollouts grouped by prompt in prompt order.

        One concurrent request per prompt (the server batches them), so that prompt i is seeded
        with `seed + i` as in the in-process engine.
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(prompts)))) as pool:
            groups = pool.map(lambda item: self._complete(*item, sampling), enumerate(prompts))
            return [rollout for group in groups for rollout in group]

    def _complete(self, index: int, prompt: str | list[int], sampling: Sampling) -> list[Rollout]:
        response = self.client.completions.create(
            model=self.model,
            prompt=prompt,
            n=sampling.n,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=None if sampling.seed is None else sampling.seed + index,
            logprobs=0 if sampling.logprobs else None,
            extra_body={
                "top_k": sampling.top_k,
                "stop_token_ids": list(sampling.stop_token_ids),
                "return_token_ids": True,
            },
        )
        rollouts = []
        for choice in sorted(response.choices, key=lambda c: c.index):
            extra = choice.model_extra or {}
            rollouts.append(
                Rollout(
                    prompt_index=index,
                    prompt_token_ids=list(extra["prompt_token_ids"]),
                    token_ids=list(extra["token_ids"]),
                    text=choice.text,
                    logprobs=list(choice.logprobs.token_logprobs) if choice.logprobs is not None else None,
                    finish_reason="stop" if choice.finish_reason == "stop" else "length",
                )
            )
        return rollouts

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push new weights through vLLM's weight-transfer API (the server's `cpu_shm` backend).

        The tensors go to a safetensors file in the server's own transfer directory (shared
        memory); the server pauses, loads it with a layerwise reload, drops its prefix cache and
        resumes. Each tensor is copied as it arrives: a LoRA policy streams merged views that are
        unmerged in place once the stream ends.
        """
        import os
        import tempfile

        from safetensors.torch import save_file

        from rollouts.server import post_json

        weight_dir = self._weight_dir()
        fd, path = tempfile.mkstemp(suffix=".safetensors", prefix="update-", dir=weight_dir)
        os.close(fd)
        try:
            save_file({name: t.detach().to("cpu", copy=True).contiguous() for name, t in named_tensors}, path)
            post_json(self.base_url + "/pause?mode=wait", None, self.api_key)
            try:
                post_json(self.base_url + "/start_weight_update", None, self.api_key)
                post_json(self.base_url + "/update_weights", {"update_info": {"path": path}}, self.api_key)
                post_json(self.base_url + "/finish_weight_update", None, self.api_key)
                # Cached prompt blocks hold KV computed with the old weights.
                post_json(self.base_url + "/reset_prefix_cache", None, self.api_key)
            finally:
                post_json(self.base_url + "/resume", None, self.api_key)
        finally:
            os.unlink(path)

    def _weight_dir(self) -> str:
        """The server's transfer directory (asked once), the weight-transfer engine initialised."""
        import urllib.error

        from rollouts.server import post_json, request_json

        if self._weight_dir_path is None:
            try:
                where = request_json(self.base_url + "/weight_updates", None, self.api_key)
                post_json(self.base_url + "/init_weight_transfer_engine", {"init_info": {}}, self.api_key)
            except urllib.error.HTTPError as err:
                raise WeightUpdateUnsupported(
                    f"{self.base_url}: the server takes no weights over vLLM's weight-transfer API "
                    f"(HTTP {err.code}). vLLM ships only CUDA backends (nccl, ipc); start the server "
                    "with weight updates on (`align serve --weight_updates true`: "
                    "VLLM_SERVER_DEV_MODE=1, the cpu_shm backend of rollouts.weight_transfer and a "
                    "private transfer directory), or use the in-process engine "
                    "(rollouts.vllm_engine.VLLMEngine)"
                ) from None
            self._weight_dir_path = where["path"]
        return self._weight_dir_path

    def close(self) -> None:
        """Close the HTTP connection pool (the server keeps running)."""
        self.client.close()
