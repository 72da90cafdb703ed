"""The model-based quality filter: a fastText scorer, gold text vs degraded text."""

from __future__ import annotations

import json
import logging
import random

from align.corpus.config import QualityTrainConfig
from align.corpus.planted import load_sample
from align.corpus.quality import QualityScorer, degrade, train_quality
from align.corpus.text import words


def test_scorer_separates_held_out_gold_from_degraded_text_with_90_percent_accuracy(tmp_path):
    records = load_sample()
    random.Random(1).shuffle(records)
    train, test = records[:240], records[240:]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train))
    path = train_quality(
        QualityTrainConfig(gold=[tmp_path / "gold.jsonl"], output_dir=tmp_path / "q", epochs=20)
    )
    assert json.loads((tmp_path / "q" / "quality.json").read_text())["negatives_source"] == "degraded gold"
    scorer = QualityScorer(str(path))  # reloaded from disk
    rng = random.Random(7)
    vocabulary = sorted({w for r in test for w in words(r["text"])})
    gold = [r["text"] for r in test]
    bad = [degrade(t, rng, vocabulary) for t in gold]
    correct = sum(scorer.score(t) >= 0.5 for t in gold) + sum(scorer.score(t) < 0.5 for t in bad)
    assert correct / (len(gold) + len(bad)) >= 0.9


def test_a_diverged_fasttext_run_is_retried_at_a_lower_learning_rate(tmp_path, caplog):
    # At 64, fastText hits "Encountered NaN" on this data (8 runs of 8); the scorer still trains.
    records = load_sample()
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    config = QualityTrainConfig(
        gold=[tmp_path / "gold.jsonl"], output_dir=tmp_path / "q", epochs=20, learning_rate=64.0
    )
    with caplog.at_level(logging.WARNING, logger="align.corpus.quality"):
        train_quality(config)
    report = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert report["learning_rate"] < 64.0
    assert "fastText diverged at learning rate 64" in caplog.text
    assert report["holdout_accuracy"] >= 0.9
