"""Time split of a PPO iteration on the tiny preset: generation, scoring, training, weight sync.

Builds a tiny Llama (and a reward model with the same backbone) on the demo task's text, runs a
few PPO iterations with the in-process vLLM engine, and reports each phase's share of an
iteration, averaged over the iterations after the first (warm-up). Target: sync <= 5%.

    .venv/bin/python scripts/bench/ppo.py [--iterations 5] [--engine vllm|hf]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PHASES = ("generation", "scoring", "training", "sync")


def build_models(root: Path) -> tuple[Path, Path]:
    """A tiny policy and a reward model sharing its backbone, tokenizer trained on the demo data."""
    from transformers import AutoModelForSequenceClassification

    from align.models import build_model, train_tokenizer

    texts = [
        m["content"]
        for line in (REPO / "data/tasks/sft_train.jsonl").read_text().splitlines()
        for m in json.loads(line)["messages"]
    ]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    policy = build_model("tiny", tokenizer, seed=0, max_position_embeddings=512)
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(str(root / "policy"), num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    return root / "policy", root / "rm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--prompts_per_iteration", type=int, default=64)
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (1 on a busy machine)")
    args = parser.parse_args()

    from align.ppo.config import PPOConfig
    from align.ppo.loop import run_ppo

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy, rm = build_models(root)
        config = PPOConfig(
            policy=policy,
            reward_model=rm,
            prompts=REPO / "data/tasks/prompts_train.jsonl",
            output_dir=root / "ppo",
            engine=args.engine,
            iterations=args.iterations,
            prompts_per_iteration=args.prompts_per_iteration,
            samples_per_prompt=1,
            max_new_tokens=64,
            minibatch_size=32,
            micro_batch_size=32,
            ppo_epochs=1,
            save_every=0,
            report_to=["none"],
            num_threads=args.num_threads,
        )
        run_ppo(config)
        rows = [json.loads(line) for line in (root / "ppo/metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows
    seconds = {phase: sum(r[f"time/{phase}"] for r in timed) / len(timed) for phase in PHASES}
    total = sum(seconds.values())
    print(
        f"PPO iteration, tiny preset, {args.engine} engine, {args.prompts_per_iteration} prompts x 64 new tokens, "
        f"mean of {len(timed)} iterations after warm-up:"
    )
    for phase in PHASES:
        print(f"  {phase:<10} {seconds[phase]:8.3f} s  {seconds[phase] / total:6.1%}")
    print(f"  {'total':<10} {total:8.3f} s")
    print(
        f"RESULT generation_share={seconds['generation'] / total:.3f} sync_share={seconds['sync'] / total:.3f}"
    )


if __name__ == "__main__":
    main()
