"""The one place that decides how a process joins a run: Accelerate, on GPUs when there are any.

`accelerate launch --config_file scripts/accelerate/cpu_2proc.yaml` starts two processes through
the multi-GPU launcher; on a machine without GPUs they must still be told to use the CPU (gloo).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def make_accelerator(**kwargs: Any):
    """An `Accelerator` that runs on the CPU when no GPU is present, whatever the launcher said."""
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available(), **kwargs)


def autocast_context(precision: str, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """What forward passes run in for a `precision` setting: bf16 autocast, or nothing.

    Our own context, not Accelerate's `mixed_precision`: that one is process-wide state, fixed by the
    first `Accelerator` of a process, so a notebook or a test session that made one in float32 could
    not run a bf16 stage after it.
    """
    import torch

    enabled = mixed_precision(precision) == "bf16"
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def mixed_precision(precision: str) -> str:
    """Accelerate's `mixed_precision` for a `precision` setting: `auto` is bf16 where the hardware
    multiplies bf16 natively (CUDA, or a CPU with AVX512-BF16/AMX), else no mixed precision."""
    import torch

    if precision == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"
    return "bf16" if precision == "bf16" else "no"


def use_cpu() -> bool:
    """For HF `TrainingArguments(use_cpu=...)`: True on machines without GPUs."""
    import torch

    return not torch.cuda.is_available()


def finish_trackers(accelerator) -> None:
    """End a run's trackers without `Accelerator.end_training()`.

    `end_training()` also destroys the default process group, which an in-process vLLM engine in
    the same process (colocated rollouts, a notebook, the test session) still uses; the group goes
    away with the process anyway.
    """
    for tracker in accelerator.trackers:
        tracker.finish()
