"""Loss-spike detection: NaN/inf, or a loss above a multiple of the recent median."""

from __future__ import annotations

import math
import statistics


class SpikeDetector:
    """Keeps the last `window` good losses; `is_spike(loss)` judges a new one before it is trained on."""

    MIN_HISTORY = 5

    def __init__(self, factor: float, window: int, history: list[float] | None = None):
        self.factor = factor
        self.window = window
        self.history: list[float] = list(history or [])[-window:]

    def is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if len(self.history) < self.MIN_HISTORY:
            return False
        return loss > self.factor * statistics.median(self.history)

    def record(self, loss: float) -> None:
        self.history.append(loss)
        del self.history[: -self.window]
