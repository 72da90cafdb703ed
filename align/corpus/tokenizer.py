"""`align tokenizer`: train the byte-level BPE vocabulary on the cleaned shards, streaming them
into `align.models.train_tokenizer`, and save it with `save_pretrained`."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from align.corpus.config import TokenizerConfig
from align.corpus.documents import iter_texts
from align.models import train_tokenizer

log = logging.getLogger(__name__)


def shard_paths(inputs: list[Path]) -> list[Path]:
    """An `align corpus` output directory stands for its `data/` shards (not its dropped sample)."""
    return [p / "data" if (p / "data").is_dir() and (p / "report.json").is_file() else p for p in inputs]


def run_tokenizer(config: TokenizerConfig) -> Path:
    """Train and save the tokenizer; returns the output directory."""
    texts = tqdm(iter_texts(shard_paths(config.inputs), limit=config.max_docs), desc="tokenizer", unit="doc")
    tokenizer = train_tokenizer(texts, config.vocab_size, config.min_frequency)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(config.output_dir))
    log.info("tokenizer with %d tokens saved to %s", len(tokenizer), config.output_dir)
    return config.output_dir
