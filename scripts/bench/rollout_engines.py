"""Rollout throughput: the in-process vLLM engine against `transformers.generate`.

Same models (random-init `tiny` and `m30` presets), same prompts, 64 new tokens, sampling at
temperature 1, batch 1/16/64/256, both engines on every core. Prints tokens/s and the ratio
vLLM/HF; the last line is `RESULT tiny_b64=.. tiny_b256=.. m30_b64=.. m30_b256=..`.

    .venv/bin/python scripts/bench/rollout_engines.py [--presets tiny,m30] [--batches 1,16,64,256]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads of a
# preempted team cost vLLM up to 40x at batch 1; both engines run under the same setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VOCAB = {"tiny": 2048, "m30": 8192}
NEW_TOKENS = 64


def synthetic_texts(n: int = 20000, seed: int = 0) -> list[str]:
    """Pseudo-words and sums: enough distinct merges for an 8k BPE vocabulary, no download."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["的", "一", "是", "了", "人"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    texts = []
    for i in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        line = " ".join(rng.choice(words) for _ in range(rng.randint(5, 25)))
        texts.append(f"{line}. What is {a} + {b}? {a + b}." if i % 2 else line)
    return texts


def build_checkpoint(preset: str, out: Path) -> Path:
    from align.models import build_model, train_tokenizer

    tokenizer = train_tokenizer(synthetic_texts(), vocab_size=VOCAB[preset])
    model = build_model(preset, tokenizer, seed=0, max_position_embeddings=512)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    print(f"{preset}: {params / 1e6:.1f}M parameters, vocabulary {len(tokenizer)}", flush=True)
    return out


def prompts(n: int) -> list[str]:
    rng = random.Random(1)
    return [f"Question {i}: what is {rng.randint(0, 99)} + {rng.randint(0, 99)}?" for i in range(n)]


def tokens_per_second(engine, batch: int, seed: int) -> float:
    from rollouts.base import Sampling

    sampling = Sampling(max_new_tokens=NEW_TOKENS, temperature=1.0, seed=seed, logprobs=True)
    start = time.perf_counter()
    rollouts = engine.generate(prompts(batch), sampling)
    elapsed = time.perf_counter() - start
    return sum(len(r.token_ids) for r in rollouts) / elapsed


def bench_preset(preset: str, batches: list[int], workdir: Path) -> dict[int, float]:
    from rollouts.hf_engine import HFEngine
    from rollouts.vllm_engine import VLLMEngine

    checkpoint = build_checkpoint(preset, workdir / preset)
    start = time.perf_counter()
    vllm = VLLMEngine(checkpoint, max_model_len=512, kv_cache_gib=1)
    print(f"{preset}: vLLM engine up in {time.perf_counter() - start:.1f} s", flush=True)
    hf = HFEngine(checkpoint)
    tokens_per_second(hf, 4, seed=0)  # warm-up
    tokens_per_second(vllm, 16, seed=0)
    # Alternate the engines batch by batch, so a change in machine load hits both alike.
    hf_rates, vllm_rates = {}, {}
    for b in batches:
        hf_rates[b] = tokens_per_second(hf, b, seed=b)
        vllm_rates[b] = tokens_per_second(vllm, b, seed=b)
    vllm.close()
    ratios = {}
    print(f"{'preset':<6} {'batch':>5} {'HF tok/s':>10} {'vLLM tok/s':>11} {'ratio':>6}")
    for b in batches:
        ratios[b] = vllm_rates[b] / hf_rates[b]
        print(f"{preset:<6} {b:>5} {hf_rates[b]:>10.0f} {vllm_rates[b]:>11.0f} {ratios[b]:>6.2f}", flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,m30")
    parser.add_argument("--batches", default="1,16,64,256")
    args = parser.parse_args()
    import torch

    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch threads: {torch.get_num_threads()}; {NEW_TOKENS} new tokens, sampling at T=1", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for preset in args.presets.split(","):
            for b, ratio in bench_preset(preset, batches, Path(workdir)).items():
                results[f"{preset}_b{b}"] = ratio
    keys = [f"{p}_b{b}" for p in ("tiny", "m30") for b in (64, 256)]
    print("RESULT " + " ".join(f"{k}={results[k]:.2f}" for k in keys if k in results))


if __name__ == "__main__":
    main()
