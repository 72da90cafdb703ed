"""Deduplication: near-duplicate documents (MinHash LSH with rensa) and exact duplicate paragraphs.

Both are global, so they run as one task over the filtered shards in rank order; the first
occurrence wins, which makes the result independent of how many workers filtered the shards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline

from align.corpus.steps import FilterStep, RecordingStep
from align.corpus.text import normalize, shingles

_PARAGRAPH = re.compile(r"\n\s*\n")


class NearDuplicateFilter(RecordingStep):
    """Drops a document whose estimated Jaccard similarity to an earlier kept one is >= threshold."""

    stage = "near_dup"

    def __init__(self, work_dir: str, threshold: float, num_perm: int, num_bands: int, seed: int,
                 head_chars: int = 300):  # fmt: skip
        super().__init__(work_dir, head_chars)
        self.threshold = threshold
        self.num_perm = num_perm
        self.num_bands = num_bands
        self.seed = seed

    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> Iterator[Document]:
        from rensa import RMinHash, RMinHashLSH

        lsh = RMinHashLSH(threshold=self.threshold, num_perm=self.num_perm, num_bands=self.num_bands)
        kept: list[tuple[str, RMinHash]] = []
        for doc in data:
            self.count(doc, 0)
            minhash = RMinHash(num_perm=self.num_perm, seed=self.seed)
            minhash.update(shingles(doc.text))
            best, best_sim = None, 0.0
            for key in lsh.query(minhash):
                sim = minhash.jaccard(kept[key][1])
                if sim > best_sim:
                    best, best_sim = kept[key][0], sim
            if best is not None and best_sim >= self.threshold:
                self.drop(
                    rank,
                    f"near_duplicate (of {best}, jaccard {best_sim:.2f})",
                    doc.id,
                    doc.metadata,
                    doc.text,
                )
                continue
            lsh.insert(len(kept), minhash)
            kept.append((doc.id, minhash))
            self.count(doc, 2)
            yield doc


class ParagraphDedup(FilterStep):
    """Removes paragraphs seen before (exact match after normalizing case and whitespace); drops a
    document left with nothing."""

    stage = "paragraph_dedup"

    def __init__(self, work_dir: str, min_chars: int, head_chars: int = 300):
        super().__init__(work_dir, head_chars)
        self.min_chars = min_chars
        self._seen: set[bytes] = set()

    def decide(self, doc: Document) -> str | None:
        kept, removed = [], 0
        for paragraph in _PARAGRAPH.split(doc.text):
            norm = normalize(paragraph)
            if len(norm) >= self.min_chars:
                digest = hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()
                if digest in self._seen:
                    removed += 1
                    continue
                self._seen.add(digest)
            kept.append(paragraph)
        if removed == 0:
            return None
        text = "\n\n".join(kept).strip()
        if not text:
            return f"all_paragraphs_duplicate ({removed})"
        doc.metadata["duplicate_paragraphs_removed"] = removed
        doc.text = text
        return None
