"""Corpus throughput: documents/s per stage, the MinHash dedup against a plain datasketch
baseline (same shingles, threshold, permutations and bands, same process), and the whole
`align corpus` pipeline (local executor).

    python scripts/bench/corpus.py [--docs 20000]

Input: the fortunes JSONL (`python data/fortunes/build.py` assembles it; run here when missing).
Last line: `RESULT dedup_ratio=<ours/datasketch speed> docs_per_s=<whole pipeline>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datatrove.data import Document

from align.corpus.config import CorpusConfig, QualityTrainConfig
from align.corpus.dedup import NearDuplicateFilter, ParagraphDedup
from align.corpus.language import LanguageIdentifier
from align.corpus.pipeline import run_corpus
from align.corpus.quality import QualityScorer, train_quality
from align.corpus.rules import RuleThresholds, check_rules
from align.corpus.text import shingles

REPO = Path(__file__).resolve().parents[2]
FORTUNES = REPO / "data" / "cache" / "fortunes" / "jsonl"


def load_docs(n: int, seed: int = 0) -> list[dict]:
    if not FORTUNES.is_dir():
        subprocess.run([sys.executable, str(REPO / "data" / "fortunes" / "build.py")], check=True)
    rows = [
        json.loads(line) for path in sorted(FORTUNES.glob("*.jsonl")) for line in path.open(encoding="utf-8")
    ]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def datasketch_dedup(texts: list[str], threshold: float, num_perm: int, num_bands: int, seed: int) -> int:
    """The baseline: datasketch MinHash + MinHashLSH, same verification rule; returns duplicates found."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(num_bands, num_perm // num_bands))
    kept: dict[int, MinHash] = {}
    duplicates = 0
    for i, text in enumerate(texts):
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch([s.encode("utf-8") for s in shingles(text)])
        if any(minhash.jaccard(kept[key]) >= threshold for key in lsh.query(minhash)):
            duplicates += 1
            continue
        lsh.insert(i, minhash)
        kept[i] = minhash
    return duplicates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from loguru import logger

    logger.remove()  # datatrove's per-task chatter
    docs = load_docs(args.docs)
    texts = [d["text"] for d in docs]
    n = len(texts)
    config = CorpusConfig(inputs=[FORTUNES], output_dir=Path("unused"))
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        identifier = LanguageIdentifier()
        identifier.identify("warm up")
        rates["language"] = n / timed(lambda: [identifier.identify(t) for t in texts])[0]
        thresholds = RuleThresholds()
        rates["rules"] = n / timed(lambda: [check_rules(t, thresholds) for t in texts])[0]
        (tmp_path / "gold.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        model = train_quality(QualityTrainConfig(gold=[tmp_path / "gold.jsonl"], output_dir=tmp_path / "q",
                                                 max_docs=5000))  # fmt: skip
        scorer = QualityScorer(str(model))
        scorer.score("warm up")
        rates["quality"] = n / timed(lambda: [scorer.score(t) for t in texts])[0]

        def ours() -> int:
            step = NearDuplicateFilter(str(tmp_path / "work"), config.near_dup_threshold, config.num_perm,
                                       config.num_bands, config.seed)  # fmt: skip
            documents = (Document(text=t, id=str(i), metadata={}) for i, t in enumerate(texts))
            return n - sum(1 for _ in step.run(documents))

        t_ours, dup_ours = timed(ours)
        t_base, dup_base = timed(lambda: datasketch_dedup(texts, config.near_dup_threshold, config.num_perm,
                                                          config.num_bands, config.seed))  # fmt: skip
        rates["near_dup (rensa)"] = n / t_ours
        rates["near_dup (datasketch)"] = n / t_base
        step = ParagraphDedup(str(tmp_path / "work"), config.min_paragraph_chars)
        rates["paragraph_dedup"] = n / timed(lambda: sum(1 for _ in step.run(
            Document(text=t, id=str(i), metadata={}) for i, t in enumerate(texts))))[0]  # fmt: skip
        whole = CorpusConfig(inputs=[tmp_path / "gold.jsonl"], output_dir=tmp_path / "corpus", quality_model=model,
                             tasks=4, workers=2)  # fmt: skip
        t_whole, _ = timed(lambda: run_corpus(whole))
    print(f"{n} fortunes (6 languages)")
    print(f"{'stage':<24}{'docs/s':>12}")
    for stage, rate in rates.items():
        print(f"{stage:<24}{rate:>12,.0f}")
    print(f"near-duplicates found: rensa {dup_ours}, datasketch {dup_base}")
    print(f"whole pipeline (local executor, 4 tasks, 2 workers): {t_whole:.1f} s, {n / t_whole:,.0f} docs/s")
    print(f"RESULT dedup_ratio={t_base / t_ours:.2f} docs_per_s={n / t_whole:.0f}")


if __name__ == "__main__":
    main()
