"""The model-based quality filter: a supervised fastText classifier, gold text vs degraded text.

`align corpus train-quality` trains it (negatives are degraded copies of the gold documents
unless real low-quality text is given) and saves `quality.bin` plus `quality.json` with the
held-out accuracy; `align corpus` keeps documents whose probability of being gold is at least
`min_quality_score`.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from datatrove.data import Document

from align.corpus.config import QualityTrainConfig
from align.corpus.documents import iter_texts
from align.corpus.steps import FilterStep, write_json_atomic
from align.corpus.text import fasttext_line, words
from align.errors import InputError

log = logging.getLogger(__name__)

GOLD, JUNK = "__label__gold", "__label__junk"
SPAM = ("click here", "buy now", "free shipping", "best price", "limited offer", "casino", "viagra", "cheap",
        "subscribe", "login", "home", "next page", "share this", "top 10", "download free")  # fmt: skip


def degrade(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """A low-quality variant of `text`: shuffled, word salad, noise, repetition or spam."""
    tokens = words(text) or ["?"]
    kind = rng.randrange(5)
    if kind == 0:  # word order destroyed
        rng.shuffle(tokens)
    elif kind == 1:  # half the words replaced by random ones
        tokens = [rng.choice(vocabulary) if rng.random() < 0.5 else t for t in tokens]
    elif kind == 2:  # character noise
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#@$%&*_=+<>/\\|"
        tokens = [
            t if rng.random() < 0.5 else "".join(rng.choices(alphabet, k=rng.randint(2, 9))) for t in tokens
        ]
    elif kind == 3:  # a phrase repeated
        start = rng.randrange(len(tokens))
        phrase = tokens[start : start + rng.randint(2, 6)]
        tokens = tokens[: rng.randint(0, 5)] + phrase * rng.randint(6, 20)
    else:  # keyword spam around a fragment
        keep = tokens[: max(1, len(tokens) // 3)]
        tokens = [w for _ in range(rng.randint(4, 12)) for w in rng.choice(SPAM).split()] + keep
        rng.shuffle(tokens)
    return " ".join(tokens)


def _write_examples(path: Path, examples: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for label, text in examples:
            f.write(f"{label} {fasttext_line(text)}\n")


def train_quality(config: QualityTrainConfig) -> Path:
    """Train and save the scorer; returns the path of `quality.bin`."""
    rng = random.Random(config.seed)
    gold = list(iter_texts(config.gold))
    if len(gold) > config.max_docs:
        gold = rng.sample(gold, config.max_docs)
    if len(gold) < 10:
        raise InputError(f"gold: need at least 10 usable documents, found {len(gold)} in {config.gold}")
    if config.negatives:
        negatives = list(iter_texts(config.negatives, limit=config.max_docs))
        if not negatives:
            raise InputError(f"negatives: no usable documents in {config.negatives}")
    else:
        vocabulary = sorted({w for text in gold[:5000] for w in words(text)})
        negatives = [degrade(text, rng, vocabulary) for text in gold]
    examples = [(GOLD, t) for t in gold] + [(JUNK, t) for t in negatives]
    rng.shuffle(examples)
    n_test = int(len(examples) * config.holdout)
    test, train = examples[:n_test], examples[n_test:]
    config.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        _write_examples(train_file, train)
        log.info("training the quality scorer on %d examples (%d gold)", len(train), len(gold))
        out = config.output_dir / "quality.bin"
        tmp_out = out.with_name("quality.bin.tmp")
        learning_rate = _train_fasttext(train_file, config, tmp_out)
    tmp_out.replace(out)
    scorer = QualityScorer(str(out))
    correct = sum((scorer.score(text) >= 0.5) == (label == GOLD) for label, text in test)
    accuracy = correct / len(test) if test else None
    write_json_atomic(
        config.output_dir / "quality.json",
        {"gold": len(gold), "negatives": len(negatives), "train": len(train), "test": len(test),
         "holdout_accuracy": accuracy, "negatives_source": "given" if config.negatives else "degraded gold",
         "learning_rate": learning_rate},
    )  # fmt: skip
    log.info("quality scorer saved to %s (held-out accuracy %s)", out, accuracy)
    return out


DIVERGENCE_RETRIES = 4
"""Retries of a diverged fastText run, each at a quarter of the previous learning rate."""


def _train_fasttext(train_file: Path, config: QualityTrainConfig, model_file: Path) -> float:
    """Train the fastText classifier into `model_file`; returns the learning rate it trained at,
    retrying a diverged run ("Encountered NaN") lower.

    Each attempt runs in a fresh process: fastText-numpy2 0.10.4 carries state from one training to
    the next in a process, so the same input, seed and learning rate 0.5 diverged in the 3rd, 4th
    and 6th of six runs in one process and never alone (2026-11-29). That is why it once looked
    random, and why retries in the same process kept failing.
    """
    spawn = multiprocessing.get_context("spawn")
    learning_rate = config.learning_rate
    for attempt in range(DIVERGENCE_RETRIES + 1):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            fit = pool.submit(
                _fit, train_file, model_file, learning_rate, config.epochs, config.dim, config.seed
            )
            if fit.result():
                return learning_rate
        if attempt < DIVERGENCE_RETRIES:
            log.warning(
                "fastText diverged at learning rate %g; retrying at %g", learning_rate, learning_rate / 4
            )
            learning_rate /= 4
    raise InputError(
        f"learning_rate: fastText diverged at every rate from {config.learning_rate:g} down to {learning_rate:g}"
    )


def _fit(train_file: Path, model_file: Path, learning_rate: float, epochs: int, dim: int, seed: int) -> bool:
    """One fastText training, saved to `model_file`; False when it diverged."""
    import fasttext

    try:
        model = fasttext.train_supervised(
            input=str(train_file), epoch=epochs, lr=learning_rate, wordNgrams=2, dim=dim,
            bucket=100_000, minCount=1, thread=1, seed=seed, verbose=0,
        )  # fmt: skip
    except RuntimeError as error:
        if "NaN" not in str(error):
            raise
        return False
    model.save_model(str(model_file))
    return True


class QualityScorer:
    """`score(text)`: the probability that `text` is gold; loads the model on first use."""

    def __init__(self, path: str):
        self.path = path
        self._model = None

    def score(self, text: str) -> float:
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(self.path)
        labels, probs = self._model.predict(fasttext_line(text), k=2)
        return float(dict(zip(labels, probs, strict=True)).get(GOLD, 0.0))


class QualityFilter(FilterStep):
    """Tags `quality_score`; keeps documents scored at least `min_score`."""

    stage = "quality"

    def __init__(self, work_dir: str, model_path: str, min_score: float, head_chars: int = 300):
        super().__init__(work_dir, head_chars)
        self.scorer = QualityScorer(model_path)
        self.min_score = min_score

    def decide(self, doc: Document) -> str | None:
        score = self.scorer.score(doc.text)
        doc.metadata["quality_score"] = round(score, 4)
        return None if score >= self.min_score else f"low_quality ({score:.2f} < {self.min_score})"
