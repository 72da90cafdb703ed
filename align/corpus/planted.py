"""A planted corpus: real multilingual text plus junk, near-duplicates and repeated paragraphs
with known answers, to measure the cleaning pipeline (tests, `scripts/bench/corpus.py`).

The clean part is `data/fortunes/sample.jsonl` (360 fortunes, 60 each in en/zh/de/ru/es/it,
labelled with their language).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from align.corpus.rules import RuleThresholds, check_rules
from align.corpus.text import shingles, words

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "fortunes" / "sample.jsonl"


@dataclass
class PlantedCorpus:
    files: list[Path]
    languages: dict[str, str] = field(default_factory=dict)
    """Clean document id -> its true language."""
    junk: dict[str, str] = field(default_factory=dict)
    """Junk document id -> the kind of junk."""
    near_duplicates: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Near-duplicate id -> (the original's id, true Jaccard similarity of character 5-grams)."""
    paragraphs: list[str] = field(default_factory=list)
    """Paragraphs each planted in three documents."""


def load_sample(path: Path = SAMPLE) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a)), set(shingles(b))
    return len(x & y) / len(x | y)


def _junk(rng: random.Random, text: str, kind: str) -> str:
    tokens = words(text)
    glue = "" if tokens and len(tokens[0]) == 1 and ord(tokens[0]) > 0x3000 else " "
    if kind == "symbols":
        return " ".join(f"### {w} ###" for w in tokens[:30])
    if kind == "repeated_lines":
        return "\n".join([glue.join(tokens[:8])] * 12)
    if kind == "boilerplate":
        return "\n".join(["We use cookies. See our cookie policy.", "Privacy policy | Terms of use",
                          "All rights reserved.", glue.join(tokens[:6])])  # fmt: skip
    if kind == "too_short":
        return glue.join(tokens[:3])
    return glue.join(tokens[:4] * 15)  # a repeated phrase


def _near_duplicate(rng: random.Random, text: str) -> str:
    """The text with two small edits (a word replaced, one appended)."""
    tokens = text.split(" ")
    i = rng.randrange(len(tokens))
    tokens[i] = tokens[i][::-1] if len(tokens) > 4 else tokens[i] + "!"
    return " ".join(tokens) + (" 好" if len(tokens) <= 4 else " indeed")


def make_planted_corpus(out_dir: Path, seed: int = 0, sample: Path = SAMPLE) -> PlantedCorpus:
    """Write the planted corpus as JSONL files under `out_dir` (one per language plus the planted parts)."""
    rng = random.Random(seed)
    records = load_sample(sample)
    out_dir.mkdir(parents=True, exist_ok=True)
    planted = PlantedCorpus(files=[])
    by_lang: dict[str, list[dict]] = {}
    for r in records:
        by_lang.setdefault(r["lang"], []).append(r)
        planted.languages[r["id"]] = r["lang"]
    passing = [r for r in records if check_rules(r["text"], RuleThresholds())[0] is None]
    originals = rng.sample(passing, 30)
    hosts = rng.sample([r for r in passing if r not in originals], 30)
    host_text = {r["id"]: r["text"] for r in hosts}
    for i in range(10):
        paragraph = (f"Notice {i}: the harbour office at pier {i * 7 + 3} opens at {6 + i % 4} in the morning "
                     f"and closes when the last ferry of the day has been tied up.")  # fmt: skip
        planted.paragraphs.append(paragraph)
        for host in hosts[3 * i : 3 * i + 3]:
            host_text[host["id"]] += "\n\n" + paragraph

    def write(name: str, rows: list[dict]) -> None:
        path = out_dir / name
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        planted.files.append(path)

    for lang, rows in sorted(by_lang.items()):
        write(f"clean-{lang}.jsonl", [{**r, "text": host_text.get(r["id"], r["text"])} for r in rows])
    junk_rows = []
    for i, kind in enumerate(
        ["symbols", "repeated_lines", "boilerplate", "too_short", "repeated_phrase"] * 8
    ):
        doc_id = f"junk-{kind}-{i}"
        junk_rows.append(
            {"id": doc_id, "text": _junk(rng, rng.choice(records)["text"], kind), "source": "junk"}
        )
        planted.junk[doc_id] = kind
    write("junk.jsonl", junk_rows)
    dup_rows = []
    for original in originals:
        doc_id = f"near-dup-of-{original['id']}"
        text = _near_duplicate(rng, original["text"])
        dup_rows.append({"id": doc_id, "text": text, "source": "near-dups"})
        planted.near_duplicates[doc_id] = (original["id"], jaccard(text, original["text"]))
    write("near-dups.jsonl", dup_rows)
    return planted
