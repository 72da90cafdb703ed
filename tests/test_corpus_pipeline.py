"""`align corpus` on a planted corpus with known answers (see align/corpus/planted.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def kept(output: Path) -> dict[str, dict]:
    rows = [json.loads(line) for path in sorted((output / "data").glob("*.jsonl")) for line in path.open()]
    return {r["id"]: r for r in rows}


def dropped(output: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((output / "dropped").glob("*.jsonl")) for line in path.open()]


def test_language_accuracy_on_six_languages_is_at_least_98_percent(planted_corpus, planted_output):
    tagged = {**{d["id"]: d.get("lang") for d in dropped(planted_output)},
              **{i: r["lang"] for i, r in kept(planted_output).items()}}  # fmt: skip
    truth = planted_corpus.languages
    assert set(truth.values()) == {"en", "zh", "de", "ru", "es", "it"}
    accuracy = sum(tagged.get(i) == lang for i, lang in truth.items()) / len(truth)
    assert accuracy >= 0.98


def test_planted_near_duplicates_are_removed_without_false_removals(planted_corpus, planted_output):
    near = [d for d in dropped(planted_output) if d["stage"] == "near_dup"]
    pairs = planted_corpus.near_duplicates
    assert min(j for _, j in pairs.values()) >= 0.7  # planted above the configured threshold
    in_pairs = set(pairs) | {original for original, _ in pairs.values()}
    assert {d["id"] for d in near} <= in_pairs  # nothing else removed as a near-duplicate
    out = kept(planted_output)
    earlier = {
        d["id"] for d in dropped(planted_output) if d["stage"] in ("read", "language", "rules", "quality")
    }
    reached = {dup: original for dup, (original, _) in pairs.items() if not {dup, original} & earlier}
    assert len(reached) >= 25  # pairs where both documents got as far as dedup
    removed = sum((dup in out) + (original in out) == 1 for dup, original in reached.items())
    assert removed / len(reached) >= 0.95


def test_every_repeated_paragraph_is_kept_exactly_once(planted_corpus, planted_output):
    texts = [r["text"] for r in kept(planted_output).values()]
    for paragraph in planted_corpus.paragraphs:
        assert sum(t.count(paragraph) for t in texts) == 1


def test_planted_junk_is_dropped_with_a_reason(planted_corpus, planted_output):
    out = kept(planted_output)
    assert not set(planted_corpus.junk) & set(out)
    reasons = {d["id"]: (d["stage"], d["reason"]) for d in dropped(planted_output)}
    assert all(reasons[i][1] for i in planted_corpus.junk)
    assert {reasons[i][0] for i in planted_corpus.junk} <= {"rules", "quality", "near_dup", "language"}


def test_chinese_survives_the_rule_filters_at_the_rate_english_does(planted_corpus, planted_output):
    rules = {d["id"] for d in dropped(planted_output) if d["stage"] == "rules"}
    rate = {}
    for lang in ("zh", "en"):
        ids = [i for i, truth in planted_corpus.languages.items() if truth == lang]
        rate[lang] = 1 - len(rules & set(ids)) / len(ids)
    assert rate["zh"] >= 0.9 and rate["en"] >= 0.9
    assert abs(rate["zh"] - rate["en"]) <= 0.05


def test_each_decision_is_visible_in_the_output_and_report(planted_output):
    for row in kept(planted_output).values():
        assert {"id", "text", "lang", "source", "lang_score", "quality_score"} <= set(row)
    for record in dropped(planted_output):
        assert record["stage"] and record["reason"] and "text" in record
    report = json.loads((planted_output / "report.json").read_text())
    stages = [s["stage"] for s in report["stages"]]
    assert stages == ["read", "language", "rules", "quality", "near_dup", "paragraph_dedup"]
    assert report["stages"][-1]["docs_out"] == len(kept(planted_output))
    for before, after in zip(report["stages"], report["stages"][1:], strict=False):
        assert before["docs_out"] == after["docs_in"]
    assert "| zh |" in (planted_output / "report.md").read_text()
    assert (planted_output / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_one_worker_gives_the_same_output_as_two(corpus_config, planted_output):
    from align.corpus.pipeline import run_corpus

    single = run_corpus(corpus_config(workers=1))
    for name in ("data/00000.jsonl", "report.json"):
        assert (single / name).read_bytes() == (planted_output / name).read_bytes()
    for path in (planted_output / "dropped").iterdir():
        assert (single / "dropped" / path.name).read_bytes() == path.read_bytes()
    assert len(list((single / "dropped").iterdir())) == len(list((planted_output / "dropped").iterdir()))
