"""Configs of the corpus stages: `align corpus`, `align corpus train-quality`, `align tokenizer`.

Light on purpose (no datatrove, fastText or transformers here) so `--help` is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError
from align.outputs import check_output_path, check_replaceable


def _check_inputs(key: str, inputs: list[Path]) -> None:
    if not inputs:
        raise ConfigError(f"{key}: at least one input file or directory is required")
    for path in inputs:
        check_exists(key, path)
        parquet = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        for file in (p for p in parquet if p.suffix == ".parquet"):
            _check_parquet(key, file)


def _check_parquet(key: str, path: Path) -> None:
    """A Parquet input must be readable and have a `text` column (its schema, not its rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(
            f"{key}: {path} is not a readable Parquet file ({str(err).splitlines()[0]})"
        ) from None
    if "text" not in names:
        raise ConfigError(f"{key}: {path} has no `text` column (columns: {', '.join(names)})")


@dataclass
class CorpusConfig:
    """Clean raw text: language id, rule filters, model-based quality filter, dedup."""

    inputs: list[Path]
    """Input files or directories: JSONL (`.jsonl`, `.jsonl.gz`) or Parquet with a `text` field
    (optional `id`, `source`), or plain `.txt` files (one document each)."""
    output_dir: Path
    """Where the cleaned shards (`data/*.jsonl`), the dropped-documents sample (`dropped/`) and the
    report (`report.md`, `report.json`, `report.png`) go; written under a temporary name, then renamed."""
    quality_model: Path | None = None
    """The scorer from `align corpus train-quality` (`quality.bin`); null skips the quality filter."""
    overwrite: bool = False
    """Replace an existing `output_dir` that an earlier `align corpus` did not write (one it did
    write is replaced anyway)."""
    languages: list[str] = field(default_factory=lambda: ["en", "zh", "de", "ru", "es", "it", "fr", "ja"])
    """Keep documents whose detected language (ISO 639-1, fastText lid.176) is in this list."""
    min_language_score: float = 0.5
    """Keep only documents whose language probability is at least this."""
    min_words: int = 5
    """Drop documents with fewer words (a CJK character counts as one word)."""
    max_words: int = 100_000
    """Drop documents with more words."""
    max_chars: int = 1_000_000
    """Drop documents (and input lines) longer than this many characters, before parsing further."""
    max_symbol_ratio: float = 0.1
    """Drop documents with more `#` / ellipsis symbols per word than this."""
    min_alpha_word_ratio: float = 0.6
    """Drop documents where fewer words than this contain a letter (or a CJK character)."""
    max_duplicate_line_chars: float = 0.3
    """Drop documents where repeated lines make up more than this share of the characters."""
    max_top_ngram_chars: float = 0.2
    """Drop documents where the most frequent repeated word 2-gram covers more than this share of the words' characters."""
    max_repeated_5gram_chars: float = 0.2
    """Drop documents where repeated word 5-grams cover more than this share of the words' characters."""
    max_boilerplate_lines: float = 0.5
    """Boilerplate lines (cookie notices, `lorem ipsum`, ...) are removed; drop the document if more than this share of lines are."""
    min_quality_score: float = 0.5
    """Keep documents the quality model scores at least this probable to be gold text."""
    near_dup_threshold: float = 0.7
    """Drop a document whose MinHash Jaccard similarity (character 5-grams) to an earlier kept one is at least this."""
    num_perm: int = 128
    """MinHash permutations."""
    num_bands: int = 32
    """LSH bands (num_perm must be divisible by it); more bands find pairs of lower similarity."""
    min_paragraph_chars: int = 20
    """Exact paragraph dedup considers paragraphs (blank-line separated) of at least this many characters."""
    executor: Literal["local", "slurm", "ray"] = "local"
    """Datatrove executor: the same pipeline runs on one machine, a Slurm cluster or a Ray cluster."""
    tasks: int = 4
    """Shards of the filtering stage (input files are split across them); the output does not depend on `workers`."""
    workers: int = 2
    """Parallel processes (local executor) or concurrent jobs (cluster executors)."""
    slurm_partition: str = "cpu"
    """Slurm partition (executor: slurm)."""
    slurm_time: str = "04:00:00"
    """Slurm time limit per task (executor: slurm)."""
    dry_run: bool = False
    """Build the executors and print the plan without running (e.g. to check a Slurm setup)."""
    dropped_text_chars: int = 300
    """Each dropped document is recorded with its reason and the first this-many characters of text."""
    seed: int = 0
    """Seed of the MinHash permutations."""

    def __post_init__(self) -> None:
        _check_inputs("inputs", self.inputs)
        check_exists("quality_model", self.quality_model)
        check_output_path(
            "output_dir", self.output_dir, [*self.inputs, self.quality_model], replaces_output=True
        )
        check_replaceable("output_dir", self.output_dir, "corpus", self.overwrite)
        if not self.languages:
            raise ConfigError("languages: at least one language code is required (e.g. en, zh)")
        for key in ("min_language_score", "max_symbol_ratio", "min_alpha_word_ratio", "max_duplicate_line_chars",
                    "max_top_ngram_chars", "max_repeated_5gram_chars", "max_boilerplate_lines",
                    "min_quality_score", "near_dup_threshold"):  # fmt: skip
            check_range(key, getattr(self, key), 0.0, 1.0)
        for key in (
            "max_words",
            "max_chars",
            "num_perm",
            "num_bands",
            "tasks",
            "workers",
            "min_paragraph_chars",
        ):
            check_positive(key, getattr(self, key))
        check_range("min_words", self.min_words, 0)
        if self.num_perm % self.num_bands:
            raise ConfigError(f"num_bands: {self.num_bands} must divide num_perm ({self.num_perm})")


@dataclass
class QualityTrainConfig:
    """Train the fastText quality scorer: gold text vs degraded (or given low-quality) text."""

    gold: list[Path]
    """Gold-standard documents (same formats as `align corpus` inputs)."""
    output_dir: Path
    """Where `quality.bin` (the fastText model) and `quality.json` (held-out accuracy) go."""
    negatives: list[Path] = field(default_factory=list)
    """Ordinary / low-quality documents; when empty, negatives are degraded copies of the gold text
    (shuffled, corrupted, repeated, spam-injected)."""
    max_docs: int = 50_000
    """Use at most this many gold documents (and as many negatives)."""
    holdout: float = 0.1
    """Share of examples held out to measure accuracy."""
    epochs: int = 10
    """fastText epochs."""
    dim: int = 32
    """fastText embedding size."""
    learning_rate: float = 0.5
    """fastText's learning rate. If training diverges ("Encountered NaN", which fastText hits at
    random even with one thread and a fixed seed), it is retried at a quarter of the rate."""
    seed: int = 0
    """Seed of the degradations, the split and fastText."""

    def __post_init__(self) -> None:
        _check_inputs("gold", self.gold)
        check_output_path("output_dir", self.output_dir, [*self.gold, *self.negatives], replaces_output=True)
        for path in self.negatives:
            check_exists("negatives", path)
        check_range("holdout", self.holdout, 0.0, 0.5)
        for key in ("max_docs", "epochs", "dim", "learning_rate"):
            check_positive(key, getattr(self, key))


@dataclass
class TokenizerConfig:
    """Train the byte-level BPE vocabulary on cleaned shards, streaming."""

    inputs: list[Path]
    """Cleaned shards: the `align corpus` output directory (its `data/`) or JSONL/Parquet/text files."""
    output_dir: Path
    """Where the tokenizer is saved (`save_pretrained`)."""
    vocab_size: int = 65_536
    """Vocabulary size including bytes and special tokens (65,536 as the seed's recipe)."""
    min_frequency: int = 2
    """Merge only pairs seen at least this often."""
    max_docs: int | None = None
    """Train on at most this many documents (null: all)."""

    def __post_init__(self) -> None:
        _check_inputs("inputs", self.inputs)
        check_output_path("output_dir", self.output_dir, self.inputs, replaces_output=True)
        check_range("vocab_size", self.vocab_size, 260)
        check_positive("min_frequency", self.min_frequency)
        if self.max_docs is not None:
            check_positive("max_docs", self.max_docs)
