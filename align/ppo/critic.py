"""PPO's critic: a sequence-classification model read as a value at every token.

The scalar head of an `AutoModelForSequenceClassification` (the reward model's, or a new one on the
policy) applied to each position's last hidden state, not only the last one. It is a module with
its own `forward` so that Accelerate wraps it whole: under DDP the reducer sees every forward and
averages the critic's gradients across processes (reaching into the wrapped model's backbone would
bypass it and leave each rank's critic training on its own data).
"""

from __future__ import annotations

from pathlib import Path

import torch


class TokenCritic(torch.nn.Module):
    """Values of every position, [B, T]."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def from_pretrained(cls, source: str | Path, pad_token_id: int) -> TokenCritic:
        """The critic initialised from a reward model or policy directory (a new head for a policy)."""
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = pad_token_id
        return cls(model)

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        return self.model.score(hidden).squeeze(-1)
