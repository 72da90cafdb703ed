"""Configuration of `align rm`: the reward model trained with TRL's RewardTrainer."""

from __future__ import annotations

from dataclasses import dataclass

from align.finetune_config import FinetuneConfig


@dataclass(kw_only=True)
class RewardStageConfig(FinetuneConfig):
    """Train a reward model from the SFT checkpoint on TRL-format preferences (Bradley-Terry).

    A row has `prompt` (a string or a list of messages), `chosen` and `rejected` (strings or lists
    of assistant messages), and optionally `criterion` (helpful, harmless, honest or overall) and `margin`
    (a number >= 0). Plain strings are read as one user turn and one assistant reply, so every pair
    is scored through the chat template as `rewards.score` scores conversations. Rows with missing
    or empty fields, chosen == rejected, an unknown criterion or a bad margin are skipped and logged
    with file and line (see `max_bad_fraction`).
    """

    learning_rate: float = 3e-4
    """Peak learning rate (AdamW)."""
    epochs: float = 2.0
    """Passes over the training pairs (ignored when `max_steps` > 0)."""
    use_margin: bool = True
    """Subtract each pair's `margin` inside the Bradley-Terry loss (rows without one use 0)."""
    center_rewards_coefficient: float | None = None
    """Weight of the penalty that keeps rewards centred on zero (null: none)."""
