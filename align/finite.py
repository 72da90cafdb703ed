"""The guard every trainer runs before an optimizer step: gradients must be finite.

One NaN or infinite gradient makes every weight NaN at the next step, and the run would go on to
save a model that answers nothing. SFT and the reward model (HF Trainer, through `FiniteGradients`)
and PPO (`check_finite_gradients` before its optimizer steps) stop instead, with an error naming
the step; the last checkpoint, written before it, is the last good state. Pretraining has its own
guard, which rolls back and skips the batch (`align.pretrain.spikes`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import TrainerCallback

from align.errors import InputError


def check_finite_gradients(
    parameters: Iterable[torch.nn.Parameter], where: str, what: str = "the model"
) -> None:
    """`InputError` if any gradient of `parameters` is NaN or infinite; `where`: "step 12"."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    if norms and not torch.isfinite(torch.stack(norms)).all():
        raise InputError(
            f"{where}: the gradient of {what} is not finite (NaN or inf), so training stopped "
            "before the update; the last checkpoint is the last good state. Likely causes: a "
            "learning rate too high for this model, or extreme values in the data"
        )


class FiniteGradients(TrainerCallback):
    """Stops an HF Trainer before an optimizer step with non-finite gradients."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            check_finite_gradients(model.parameters(), f"step {state.global_step + 1}")
        return control
