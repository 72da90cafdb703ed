"""The learning-rate schedule of one phase: linear warmup, then cosine down to a floor.

Step s (0-based) of a phase of T steps with W = ceil(warmup_ratio * T) warmup steps:
  s < W:  lr = peak * (s + 1) / W                     (the peak is reached at s = W - 1)
  s >= W: p = (s + 1 - W) / (T - W),  lr = floor + (peak - floor) * (1 + cos(pi * p)) / 2
with floor = min_lr_ratio * peak, reached at the phase's last step s = T - 1.
"""

from __future__ import annotations

import math


def warmup_steps(total: int, warmup_ratio: float) -> int:
    return min(total, math.ceil(warmup_ratio * total))


def learning_rate(
    step: int, total: int, peak: float, warmup_ratio: float = 0.025, min_ratio: float = 0.1
) -> float:
    """The learning rate of optimizer step `step` (0-based) in a phase of `total` steps."""
    warmup = warmup_steps(total, warmup_ratio)
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = min_ratio * peak
    progress = min(1.0, (step + 1 - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
