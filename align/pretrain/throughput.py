"""Throughput accounting: tokens/s per device and model FLOPs utilisation (MFU).

FLOPs per token follow the PaLM appendix: 6N for the dense matmuls (forward + backward) plus
12 * layers * hidden * seq_len for attention scores and values.
"""

from __future__ import annotations

import time


def flops_per_token(parameters: int, layers: int, hidden: int, seq_len: int) -> float:
    return 6.0 * parameters + 12.0 * layers * hidden * seq_len


def measure_peak_flops(device, dtype, size: int = 1024, rounds: int = 5, repeats: int = 4) -> float:
    """FLOP/s of a square matmul on `device` (best of `rounds`, so a busy moment does not lower it)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2.0 * size**3 * repeats / (time.perf_counter() - started))
    return best


class Throughput:
    """Running tokens/s (per device) and MFU since the last `update`."""

    def __init__(self, flops_per_token: float, peak_flops: float):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._last = time.perf_counter()

    def update(self, tokens: int) -> tuple[float, float]:
        """(tokens/s, MFU) for `tokens` processed on this device since the previous call."""
        now = time.perf_counter()
        rate = tokens / max(now - self._last, 1e-9)
        self._last = now
        return rate, rate * self.flops_per_token / self.peak_flops
