"""Packed pretraining throughput against an HF `Trainer` on padded, unpacked batches.

Both train the same freshly initialised model (a preset) on the same documents, whose lengths vary
as real text does. Ours packs documents with EOS separators into full sequences; the baseline pads
each batch of documents to its longest. Throughput counts real (non-pad) tokens per second.

    .venv/bin/python scripts/bench/pretrain.py                      # CPU: tiny preset
    python scripts/bench/pretrain.py --preset 1b --dtype bfloat16  # a GPU: also reports MFU

Last line: RESULT ratio=<ours/HF> real_token_share=<ours>
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

WORDS = (  # noqa: SIM905 - a word list reads better as one string
    "the of and to in is was for on that with as by at from it his an were are which this be or has had "
    "not but first one their its new after who they have her she two been other when there all during into "
    "school time may years more most only over city some world would where later up such used many can "
    "state about national out known university united then made"
).split()


def documents(count: int, seed: int) -> list[str]:
    """Texts with log-normally distributed lengths (a few words to a few hundred), as web text has."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = max(3, min(300, int(rng.lognormvariate(3.6, 0.9))))
        texts.append(" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + ".")
    return texts


def run_ours(args, work: Path, tokenizer_dir: Path, data: Path) -> tuple[float, float, float]:
    """(real tokens/s, real-token share, MFU) of `align pretrain` on the documents."""
    import torch

    from align.models import load_tokenizer
    from align.pretrain.config import PhaseConfig, PretrainConfig, SourceConfig
    from align.pretrain.loop import run_pretrain
    from align.pretrain.mixture import Ledger, MixtureSampler, load_source
    from align.pretrain.packing import pack_batch

    phase = PhaseConfig(
        mixture={"web": 1.0}, max_steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len
    )
    source = SourceConfig("web", data)
    out = work / "ours"
    config = PretrainConfig(
        model=args.preset, tokenizer=tokenizer_dir, sources=[source], phases=[phase], output_dir=out,
        save_steps=10**9, report_to=["none"], dtype=args.dtype, seed=0,
    )  # fmt: skip
    run_pretrain(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    measured = rows[args.warmup :]
    tokens_per_step = args.batch_size * args.seq_len
    seconds = sum(tokens_per_step / r["tokens_per_s_per_device"] for r in measured)
    mfu = statistics.mean(r["mfu"] for r in measured)
    # The share of real tokens in what the loop trains on: pack the same stream and count pads.
    tokenizer = load_tokenizer(tokenizer_dir)
    sampler = MixtureSampler({"web": load_source(source)}, Ledger(), seed=0)
    sampler.start_phase({"web": 1.0}, "new_epoch", 0)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    batch = torch.cat(
        [
            pack_batch(sampler, encode, tokenizer.eos_token_id, args.batch_size, args.seq_len).input_ids
            for _ in range(args.steps)
        ]
    )
    share = float((batch != tokenizer.pad_token_id).float().mean())
    return tokens_per_step * len(measured) * share / seconds, share, mfu


def run_hf(args, work: Path, tokenizer_dir: Path, texts: list[str]) -> tuple[float, float]:
    """(real tokens/s, real-token share) of an HF Trainer on padded batches of whole documents."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from align.distributed import use_cpu
    from align.models import build_model, load_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(tokenizer_dir)
    tokenizer.padding_side = "right"
    model = build_model(args.preset, tokenizer, seed=0).to(getattr(torch, args.dtype))
    dataset = Dataset.from_dict({"text": texts}).map(
        lambda row: tokenizer(row["text"] + tokenizer.eos_token, truncation=True, max_length=args.seq_len),
        remove_columns=["text"],
    )
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    real, total, stamps = [], [], []

    def counting_collator(features):
        batch = collate(features)
        real.append(int(batch["attention_mask"].sum()))
        total.append(batch["attention_mask"].numel())
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    training = TrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=1, adam_beta2=0.95, weight_decay=0.1,
        logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=use_cpu(), bf16=args.dtype == "bfloat16",
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=dataset,
        data_collator=counting_collator,
        callbacks=[Clock()],
    )
    trainer.train()
    measured_real = sum(real[args.warmup : args.steps])
    seconds = stamps[-1] - stamps[args.warmup - 1]
    return measured_real / seconds, sum(real[: args.steps]) / sum(total[: args.steps])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--docs", type=int, default=4000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from align.models import train_tokenizer

    texts = documents(args.docs, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer_dir = work / "tokenizer"
        train_tokenizer(texts, vocab_size=2048).save_pretrained(tokenizer_dir)
        data = work / "docs.jsonl"
        data.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
        ours, ours_share, mfu = run_ours(args, work, tokenizer_dir, data)
        hf, hf_share = run_hf(args, work, tokenizer_dir, texts)
    print(
        f"ours (packed):     {ours:10,.0f} real tokens/s   real-token share {ours_share:.1%}   MFU {mfu:.2%}"
    )
    print(f"HF Trainer (pad):  {hf:10,.0f} real tokens/s   real-token share {hf_share:.1%}")
    print(f"RESULT ratio={ours / hf:.2f} real_token_share={ours_share:.4f}")


if __name__ == "__main__":
    main()
