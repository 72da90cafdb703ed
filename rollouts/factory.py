"""Build a rollout engine from a small config (a section of a stage's recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rollouts.base import RolloutEngine

ENGINES = ("vllm", "server", "hf")


@dataclass
class EngineConfig:
    """Which engine generates rollouts, and how to reach or start it."""

    kind: Literal["vllm", "server", "hf"] = "vllm"
    """vllm: in-process vLLM colocated with the trainer; server: a running `align serve` endpoint;
    hf: `transformers.generate` (reference, and machines without vLLM)."""
    base_url: str = "http://127.0.0.1:8000"
    """Server address (kind=server)."""
    api_key: str | None = None
    """Bearer token of the server (kind=server)."""
    served_model_name: str = "policy"
    """The model name the server answers to (kind=server)."""
    max_model_len: int = 512
    """Longest prompt + completion in tokens (kind=vllm)."""
    kv_cache_gib: float = 1.0
    """KV-cache memory, GiB (kind=vllm)."""
    num_threads: int | None = None
    """Torch threads shared by engine and trainer (kind=vllm; null: OMP_NUM_THREADS or all cores)."""
    seed: int = 0
    """Engine seed (kind=vllm)."""

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise ValueError(f"kind: {self.kind!r} is not an engine; allowed: {', '.join(ENGINES)}")
        if self.max_model_len <= 0:
            raise ValueError(f"max_model_len: must be > 0, got {self.max_model_len!r}")
        if self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib: must be > 0, got {self.kv_cache_gib!r}")


def build_engine(config: EngineConfig, model: str | Path) -> RolloutEngine:
    """The engine `config` names, starting from the `save_pretrained` directory `model`.

    For kind=server, `model` is ignored: the server already serves its checkpoint.
    """
    if config.kind == "vllm":
        from rollouts.vllm_engine import VLLMEngine

        return VLLMEngine(
            model,
            max_model_len=config.max_model_len,
            seed=config.seed,
            kv_cache_gib=config.kv_cache_gib,
            num_threads=config.num_threads,
        )
    if config.kind == "server":
        from rollouts.client_engine import ClientEngine

        return ClientEngine(config.base_url, config.served_model_name, config.api_key)
    from rollouts.hf_engine import HFEngine

    return HFEngine(model)
