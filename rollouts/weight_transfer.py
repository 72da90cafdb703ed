"""A CPU backend for vLLM's weight-transfer API, so a running `vllm serve` takes new weights.

vLLM ships only CUDA backends (nccl, ipc). This one moves a safetensors file through shared
memory (`/dev/shm`): the trainer writes it into the server's private transfer directory,
`POST /update_weights {"update_info": {"path": ...}}` tells the worker to load it, with the same
layerwise reload and tied-head repack as the in-process engine. The server loads this module with
`--worker-extension-cls rollouts.weight_transfer.WeightTransferExtension` (importing it
registers the backend in the worker process) and `--weight-transfer-config '{"backend": "cpu_shm"}'`;
the RL routes need `VLLM_SERVER_DEV_MODE=1`. `rollouts.server` sets all three for
`weight_updates=True`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

from rollouts.server_guard import WEIGHT_DIR_ENV, inside_weight_dir
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
        self.head_is_tied = tied_lm_head(self.model) is not None  # read before the reload swaps parameters
        self.reloading = False

    def update_weights(self, update_info: dict) -> None:
        # The base class synchronises an accelerator, which a CPU worker does not have.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: SharedMemoryUpdateInfo) -> None:
        from safetensors.torch import load_file
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        # The server's guard already checked the path; the whole file is read before the model's
        # parameters are swapped out, so a file that fails to load leaves the old weights serving.
        tensors = load_file(inside_weight_dir(update_info.path, os.environ.get(WEIGHT_DIR_ENV)))
        initialize_layerwise_reload(self.model)
        self.reloading = True
        self.model.load_weights(tensors.items())

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        if not getattr(self, "reloading", False):
            return
        with expected_reload_gaps_quiet(self.head_is_tied):
            finalize_layerwise_reload(self.model, self.model_config)
        repack_tied_head(self.model)
        self.reloading = False

    def shutdown(self) -> None:
        """Nothing to release."""


class WeightTransferExtension:
    """Named by `--worker-extension-cls`: importing this module in the worker registers the backend."""


if BACKEND not in WeightTransferEngineFactory._registry:
    WeightTransferEngineFactory.register_engine(BACKEND, SharedMemoryWeightTransfer)
