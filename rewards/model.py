"""The reward model: the SFT backbone with its LM head replaced by a new scalar head.

`AutoModelForSequenceClassification(num_labels=1)` loads the SFT checkpoint's transformer and
puts a freshly initialised `hidden -> 1` layer (`score`) where the vocabulary projection was; the
reward of a conversation is that layer's output at its last (non-padding) token. LoRA reward
models are saved as adapters (with the head in `modules_to_save`) and load the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.models import check_model_dir

Conversation = Sequence[dict[str, str]]


def build_reward_model(path: str | Path, **kwargs: Any) -> Any:
    """A reward model initialised from a causal-LM checkpoint (backbone kept, new scalar head)."""
    from transformers import AutoModelForSequenceClassification

    check_model_dir(path)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, **kwargs)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_reward_model(path: str | Path) -> Any:
    """A trained reward model from `align rm`'s output directory (full weights or a LoRA adapter)."""
    check_model_dir(path)
    if (Path(path) / "adapter_config.json").exists():
        from peft import AutoPeftModelForSequenceClassification

        base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        check_model_dir(base)
        return AutoPeftModelForSequenceClassification.from_pretrained(str(path), num_labels=1).eval()
    return build_reward_model(path).eval()


def score(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], batch_size: int = 32
) -> list[float]:
    """Rewards of whole conversations (prompt turns plus the assistant's reply), in order.

    Each is rendered with the tokenizer's chat template exactly as `RewardTrainer` renders its
    training pairs, so scores are comparable with what the model was trained on.
    """
    import torch

    texts = [tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
    rewards: list[float] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        with torch.no_grad():
            logits = model(**batch).logits
        rewards += logits[:, 0].float().tolist()
    model.train(was_training)
    return rewards
