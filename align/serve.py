"""`align serve CHECKPOINT`: a checkpoint behind vLLM's OpenAI-compatible API on 127.0.0.1.

The labelling app, evaluation, self-instruct and the client rollout engine all talk to this one
server. It runs until SIGINT or SIGTERM, then stops vLLM cleanly.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError

if TYPE_CHECKING:
    from rollouts.server import ServerSettings

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Serve a checkpoint over vLLM's OpenAI-compatible API."""

    checkpoint: Path
    """A `save_pretrained` directory (model and tokenizer) written by this suite or any HF tool."""
    host: str = "127.0.0.1"
    """Address to bind; keep loopback unless the network in between is trusted."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """Clients must send this bearer token (null: none needed)."""
    served_model_name: str = "policy"
    """The `model` name clients ask for."""
    max_model_len: int = 512
    """Longest prompt + completion, in tokens."""
    dtype: str = "float32"
    """Weights dtype inside vLLM (float32 on CPU; bfloat16 on GPUs)."""
    kv_cache_gib: float = 1.0
    """Memory for the KV cache, GiB."""
    seed: int = 0
    """Sampling seed of the engine."""
    tensor_parallel_size: int = 1
    """Split the model across this many GPUs (vLLM tensor parallelism; 1 on CPU)."""
    weight_updates: bool = False
    """Open vLLM's RL routes (/pause, /update_weights, ...) by setting VLLM_SERVER_DEV_MODE=1."""
    startup_timeout: float = 300.0
    """Seconds to wait for the server's /health before giving up."""
    log_file: Path | None = None
    """Where the server's own output goes (null: inherit this process's output)."""

    def __post_init__(self) -> None:
        check_exists("checkpoint", self.checkpoint)
        if not (Path(self.checkpoint) / "config.json").is_file():
            raise ConfigError(
                f"checkpoint: {self.checkpoint} has no config.json; pass a save_pretrained directory"
            )
        check_range("port", self.port, 1, 65535)
        check_positive("max_model_len", self.max_model_len)
        check_positive("tensor_parallel_size", self.tensor_parallel_size)
        check_positive("kv_cache_gib", self.kv_cache_gib)
        check_positive("startup_timeout", self.startup_timeout)
        if not self.served_model_name:
            raise ConfigError("served_model_name: must not be empty")


def server_settings(config: ServeConfig) -> ServerSettings:
    """The server settings of a serve config."""
    from rollouts.server import ServerSettings

    return ServerSettings(
        model=str(config.checkpoint),
        host=config.host,
        port=config.port,
        api_key=config.api_key,
        served_model_name=config.served_model_name,
        max_model_len=config.max_model_len,
        dtype=config.dtype,
        kv_cache_gib=config.kv_cache_gib,
        seed=config.seed,
        tensor_parallel_size=config.tensor_parallel_size,
        weight_updates=config.weight_updates,
    )


class _Stop(Exception):
    """Raised by the signal handler: SIGINT/SIGTERM end `run_serve`, even while it starts up."""


def _raise_stop(*_: object) -> None:
    raise _Stop


def run_serve(config: ServeConfig) -> None:
    """Start the server, block until SIGINT/SIGTERM, then stop it."""
    from rollouts.server import VLLMServer

    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = VLLMServer(server_settings(config), log_path=config.log_file)
    try:
        server.start(timeout=config.startup_timeout)
        print(
            f"serving {config.checkpoint} as {config.served_model_name!r} at {server.settings.base_url}/v1",
            flush=True,
        )
        while server.process is not None and server.process.poll() is None:
            time.sleep(1.0)
        raise RuntimeError("vllm serve exited unexpectedly")
    except _Stop:
        logger.info("stopping the server")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
