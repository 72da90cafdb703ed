"""Acceptance 1: with packing, SFT trains exactly on the assistant turns of multi-turn conversations."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_packed_labels_are_ignored_exactly_outside_assistant_turns(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from align.models import load_tokenizer

    lines = (REPO / "data/tasks/sft_train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    conversations = [json.loads(line)["messages"] for line in lines]
    assert any(sum(m["role"] == "assistant" for m in c) > 1 for c in conversations)  # multi-turn
    assert any(c[0]["role"] == "system" for c in conversations)
    from datasets import Dataset

    from align.sft_config import SFTStageConfig

    config = SFTStageConfig(
        model=tiny_model_dir,
        train_file=REPO / "data/tasks/sft_train.jsonl",
        output_dir=tmp_path / "out",
        max_length=256,
    )
    tokenizer = load_tokenizer(tiny_model_dir)

    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        args=SFTConfig(**config.trainer_arguments(), packing=True, assistant_only_loss=True),
        train_dataset=Dataset.from_list([{"messages": c} for c in conversations]),
        eval_dataset=Dataset.from_list([{"messages": c} for c in conversations[:2]]),
        processing_class=tokenizer,
    )
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(rows) < len(conversations)  # really packed
    batch = trainer.data_collator(rows)
    ids, labels = batch["input_ids"].flatten().tolist(), batch["labels"].flatten().tolist()
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == -100:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    expected = [m["content"] + "<|im_end|>" for c in conversations for m in c if m["role"] == "assistant"]
    assert Counter(runs) == Counter(expected)
