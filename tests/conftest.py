"""Shared, session-scoped fixtures: one tiny tokenizer + model for the whole run, built offline."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# vLLM in this process, and no telemetry or hub look-ups from any library.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def tiny_texts(n: int = 3000, seed: int = 0) -> list[str]:
    """English, Chinese and arithmetic lines: enough for a tokenizer that covers the demo's scripts."""
    rng = random.Random(seed)
    english = [
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "is",
        "it",
        "you",
        "that",
        "he",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
    ]
    chinese = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从"
    texts = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if i % 3 == 0:
            texts.append(" ".join(rng.choice(english) for _ in range(rng.randint(5, 20))).capitalize() + ".")
        elif i % 3 == 1:
            texts.append("".join(rng.choice(chinese) for _ in range(rng.randint(5, 30))) + "。")
        else:
            texts.append(f"What is {a} + {b}? {a} + {b} = {a + b}. {a} 加 {b} 等于 {a + b}。")
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and its byte-level BPE tokenizer (2k vocabulary), saved in HF format."""
    from align.models import build_model, train_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(tiny_texts(), vocab_size=2048)
    model = build_model("tiny", tokenizer, seed=0, max_position_embeddings=512)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- rollouts (issue 5/7): one in-process vLLM engine and one `align serve` server per session ---


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path):
    """An in-process `VLLMEngine` over `tiny_model_dir`, shared by the whole session.

    A test that pushes other weights with `load_weights` must push back the tiny model's
    (`tiny_model_dir`) when done, or push what it needs first.
    """
    from rollouts.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model_dir, max_model_len=512, kv_cache_gib=1)
    yield engine
    engine.close()
