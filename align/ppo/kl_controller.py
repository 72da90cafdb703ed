"""The KL coefficient β of the per-token penalty to the reference, and how it adapts.

Two rules, applied after every iteration to that iteration's mean per-sequence KL:
- with a `target`, the proportional controller of Ziegler et al. (2019): β *= 1 + clip(KL/target - 1,
  -0.2, 0.2), so β drifts up while the policy runs away from the reference and back down once it
  is inside the target (a β that only ever grows ends up drowning the reward in KL noise);
- above the hard `bound`, β doubles at once.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_STEP = 0.2


@dataclass
class KLController:
    value: float
    """β now."""
    target: float | None
    """Per-sequence KL the proportional rule steers toward (None: β only reacts to the bound)."""
    bound: float
    """Per-sequence KL above which β doubles."""

    def update(self, kl: float) -> float:
        """Adapt β to an iteration's KL; returns the new β."""
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -MAX_STEP), MAX_STEP)
            self.value *= 1.0 + error
        if kl > self.bound:
            self.value *= 2.0
        return self.value
