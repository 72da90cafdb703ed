"""Multiple-choice scoring throughput: our vLLM path against lm-eval's HF path, same model and task.

    .venv/bin/python scripts/bench/eval.py [--model DIR] [--questions 400]

Builds an MMLU-format task (5-shot, 4 choices) of `--questions` arithmetic questions, scores it once
with each path after a warm-up, and prints choices scored per second. Without `--model` it builds
the tests' tiny Llama (same tokenizer and architecture as `tiny_model_dir`).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]


def write_mmlu(root: Path, questions: int, seed: int = 0) -> None:
    """An MMLU-format folder: one STEM subject, `questions` test rows and 5 dev rows."""
    rng = random.Random(seed)
    for split, n in (("dev", 5), ("test", questions)):
        (root / split).mkdir(parents=True, exist_ok=True)
        with (root / split / f"elementary_mathematics_{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            for _ in range(n):
                a, b = rng.randint(1, 99), rng.randint(1, 99)
                options = [a + b, a + b + 1, a + b - 1, a + b + 10]
                rng.shuffle(options)
                writer.writerow([f"What is {a} + {b}?", *options, "ABCD"[options.index(a + b)]])


def tiny_model(out: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_texts

    from align.models import build_model, train_tokenizer

    tokenizer = train_tokenizer(tiny_texts(), vocab_size=2048)
    build_model("tiny", tokenizer, seed=0, max_position_embeddings=512).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def timed(lm, rendered, limit: int) -> float:
    from align.eval.run import evaluate

    evaluate(lm, rendered, limit=8)  # warm-up: first forward passes, dataset caching
    start = time.perf_counter()
    evaluate(lm, rendered, limit=limit)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="HF checkpoint directory (default: a tiny Llama)")
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=64, help="batch size of the HF path")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from align.eval.benchmarks import render_tasks
    from align.eval.vllm_lm import VLLMEngineLM

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "model")
        write_mmlu(tmp / "mmlu", args.questions)
        rendered = render_tasks({"mmlu": str(tmp / "mmlu")}, tmp / "tasks")
        choices = 4 * args.questions

        hf_s = timed(HFLM(pretrained=str(model), dtype="float32", device="cpu", batch_size=args.batch_size),
                     rendered, args.questions)  # fmt: skip
        vllm_s = timed(VLLMEngineLM.from_checkpoint(str(model)), rendered, args.questions)
    print(f"model {model}, {args.questions} questions x 4 choices, 5-shot")
    print(f"HF (lm-eval hf):   {hf_s:7.2f} s  {choices / hf_s:8.1f} choices/s")
    print(f"vLLM (ours):       {vllm_s:7.2f} s  {choices / vllm_s:8.1f} choices/s")
    print(f"RESULT ratio={hf_s / vllm_s:.2f}")


if __name__ == "__main__":
    main()
