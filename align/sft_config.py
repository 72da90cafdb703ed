"""Configuration of `align sft`: supervised fine-tuning on conversations with TRL's SFTTrainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align.config import check_positive
from align.finetune_config import FinetuneConfig


@dataclass(kw_only=True)
class SFTStageConfig(FinetuneConfig):
    """Fine-tune a base model on `{"messages": [...]}` conversations (TRL's conversational format).

    A row needs a `messages` list of `{"role", "content"}` with roles system/user/assistant,
    non-empty string contents and at least one assistant turn; other rows are skipped and logged
    with file and line (see `max_bad_fraction`).
    """

    learning_rate: float = 5e-4
    """Peak learning rate (AdamW)."""
    packing: bool = True
    """Pack conversations into rows of `max_length` tokens (best-fit, padding-free)."""
    assistant_only_loss: bool = True
    """Train only on assistant turns (the chat template's generation markers); else on every token."""
    accuracy_prompts: Path | None = None
    """Prompts (`{"prompt": [...]}` JSONL) on which to measure the rule-judged task accuracy of the
    base and the fine-tuned model, greedy decoding; written to `output_dir/sft_metrics.json`."""
    accuracy_samples: int = 100
    """How many of `accuracy_prompts` to judge."""
    max_new_tokens: int = 48
    """Longest reply generated when measuring accuracy."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("accuracy_samples", self.accuracy_samples)
        check_positive("max_new_tokens", self.max_new_tokens)
