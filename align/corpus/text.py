"""Text helpers shared by the corpus stages: CJK-aware words, shingles and fastText lines.

Chinese and Japanese are written without spaces, so "words" are whitespace-separated runs for
alphabetic scripts and single characters for CJK; a Chinese document then has a word count and
n-gram statistics comparable to an English one of the same content.
"""

from __future__ import annotations

import re

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(f"[{CJK}]|[^\\s{CJK}]+")
_SPACE = re.compile(r"\s+")


def words(text: str) -> list[str]:
    """Whitespace-separated words, with each CJK character its own word."""
    return _WORD.findall(text)


def is_cjk(word: str) -> bool:
    return len(word) == 1 and re.match(f"[{CJK}]", word) is not None


def normalize(text: str) -> str:
    """Lower-cased with whitespace runs collapsed: the form compared by dedup."""
    return _SPACE.sub(" ", text.lower()).strip()


def shingles(text: str, n: int = 5) -> list[str]:
    """Character n-grams of the normalized text (script-agnostic, so CJK needs no segmenter)."""
    norm = normalize(text)
    if len(norm) <= n:
        return [norm]
    return [norm[i : i + n] for i in range(len(norm) - n + 1)]


_TOKEN = re.compile(f"[{CJK}]|\\w+|[^\\w\\s]")


def fasttext_line(text: str) -> str:
    """One line for the fastText scorer: words and punctuation as tokens (case kept, CJK per
    character) plus a few bucketed shape features (unique-token ratio, length, punctuation share,
    line count) that a bag of n-grams cannot see, such as repetition and noise."""
    tokens = _TOKEN.findall(text)
    n = len(tokens) or 1
    shape = (
        f"_u{int(len(set(tokens)) / n * 10)}",
        f"_n{min(n.bit_length(), 12)}",
        f"_p{int(sum(not t[0].isalnum() for t in tokens) / n * 20)}",
        f"_l{min(text.count(chr(10)), 5)}",
    )
    return " ".join([*tokens, *shape])
