"""A CPU backend for vLLM's weight-transfer API, so a running `vllm serve` takes new weights.

vLLM ships only CUDA backends (nccl, ipc). This one moves a safetensors file through shared
memory (`/dev/shm`): the trainer writes it, `POST /update_weights {"update_info": {"path": ...}}`
tells the worker to load it, with the same layerwise reload and tied-head repack as the
in-process engine. The server loads this module with
`--worker-extension-cls rollouts.weight_transfer.WeightTransferExtension` (importing it
registers the backend in the worker process) and `--weight-transfer-config '{"backend": "cpu_shm"}'`;
the RL routes need `VLLM_SERVER_DEV_MODE=1`. `rollouts.server` sets all three for
`weight_updates=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

from rollouts.vllm_engine import expected_reload_gaps_quiet, repack_tied_head, tied_lm_head

BACKEND = "cpu_shm"


@dataclass
class SharedMemoryInitInfo(WeightTransferInitInfo):
    """Nothing to set up: each update names its own file."""


@dataclass
class SharedMemoryUpdateInfo(WeightTransferUpdateInfo):
    path: str
    """A safetensors file of HF-named tensors, readable by the server's worker."""


class SharedMemoryWeightTransfer(WeightTransferEngine[SharedMemoryInitInfo, SharedMemoryUpdateInfo]):
    """Loads HF-named tensors from a safetensors file into the running model."""

    init_info_cls = SharedMemoryInitInfo
    update_info_cls = SharedMemoryUpdateInfo
    supports_draft_weight_update = False

    def init_transfer_engine(self, init_info: SharedMemoryInitInfo) -> None:
        """Nothing to connect."""

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.head_is_tied = tied_lm_head(self.model) is not None  # read before the reload swaps parameters
        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class synchronises an accelerator, which a CPU worker does not have.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: SharedMemoryUpdateInfo) -> None:
        from safetensors.torch import load_file

        self.model.load_weights(load_file(update_info.path).items())

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        with expected_reload_gaps_quiet(self.head_is_tied):
            finalize_layerwise_reload(self.model, self.model_config)
        repack_tied_head(self.model)

    def shutdown(self) -> None:
        """Nothing to release."""


class WeightTransferExtension:
    """Named by `--worker-extension-cls`: importing this module in the worker registers the backend."""


if BACKEND not in WeightTransferEngineFactory._registry:
    WeightTransferEngineFactory.register_engine(BACKEND, SharedMemoryWeightTransfer)
