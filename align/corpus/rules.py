"""Rule-based quality filters in the style of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020),
with CJK-aware word counting: a CJK character is one word, so Chinese is judged like English."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from datatrove.data import Document

from align.corpus.steps import FilterStep
from align.corpus.text import is_cjk, words

BOILERPLATE = re.compile(
    r"lorem ipsum|javascript|cookie policy|use of cookies|terms of (use|service)|privacy policy"
    r"|all rights reserved|click here|subscribe to our newsletter",
    re.IGNORECASE,
)
BULLETS = ("•", "●", "○", "■", "□", "▪", "‣", "-", "*", "·")


@dataclass(frozen=True)
class RuleThresholds:
    min_words: int = 5
    max_words: int = 100_000
    max_chars: int = 1_000_000
    max_symbol_ratio: float = 0.1
    min_alpha_word_ratio: float = 0.6
    max_duplicate_line_chars: float = 0.3
    max_top_ngram_chars: float = 0.2
    max_repeated_5gram_chars: float = 0.2
    max_boilerplate_lines: float = 0.5
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3


def repeated_ngram_chars(tokens: list[str], n: int, top_only: bool) -> float:
    """Share of word characters inside n-grams that occur more than once (or in the top one only)."""
    total = sum(len(t) for t in tokens)
    if len(tokens) < n or total == 0:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    if top_only:
        gram, count = counts.most_common(1)[0]
        return 0.0 if count < 2 else sum(len(t) for t in gram) * count / total
    covered = [False] * len(tokens)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = [True] * n
    return sum(len(t) for t, c in zip(tokens, covered, strict=True) if c) / total


def check_rules(text: str, t: RuleThresholds) -> tuple[str | None, str]:
    """(reason to drop or None, the text with boilerplate lines removed)."""
    if len(text) > t.max_chars:
        return f"too_long ({len(text):,} chars)", text
    lines = [line for line in text.split("\n")]
    non_empty = [line.strip() for line in lines if line.strip()]
    boiler = [line for line in non_empty if BOILERPLATE.search(line)]
    if non_empty and len(boiler) / len(non_empty) > t.max_boilerplate_lines:
        return f"boilerplate ({len(boiler)}/{len(non_empty)} lines)", text
    if boiler:
        text = "\n".join(line for line in lines if not BOILERPLATE.search(line))
        non_empty = [line for line in non_empty if not BOILERPLATE.search(line)]
    tokens = words(text)
    if len(tokens) < t.min_words:
        return f"too_few_words ({len(tokens)} < {t.min_words})", text
    if len(tokens) > t.max_words:
        return f"too_many_words ({len(tokens)})", text
    latin = [w for w in tokens if not is_cjk(w)]
    if len(latin) >= t.min_words and len(latin) > len(tokens) / 2:
        mean = sum(len(w) for w in latin) / len(latin)
        if not 2 <= mean <= 12:
            return f"mean_word_length ({mean:.1f} outside [2, 12])", text
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / len(tokens) > t.max_symbol_ratio:
        return f"symbol_ratio ({symbols / len(tokens):.2f})", text
    alpha = sum(any(c.isalpha() for c in w) for w in tokens) / len(tokens)
    if alpha < t.min_alpha_word_ratio:
        return f"alpha_words ({alpha:.2f} < {t.min_alpha_word_ratio})", text
    if sum(line.startswith(BULLETS) for line in non_empty) / len(non_empty) > t.max_bullet_lines:
        return "bullet_lines", text
    if sum(line.endswith(("...", "…")) for line in non_empty) / len(non_empty) > t.max_ellipsis_lines:
        return "ellipsis_lines", text
    line_counts = Counter(non_empty)
    dup_chars = sum(len(line) * c for line, c in line_counts.items() if c > 1)
    if dup_chars / sum(len(line) for line in non_empty) > t.max_duplicate_line_chars:
        return f"duplicate_lines ({dup_chars} chars)", text
    # A CJK "word" here is one character, about half a real word: compare n-grams of twice the length.
    scale = 2 if len(tokens) - len(latin) > len(tokens) / 2 else 1
    top = repeated_ngram_chars(tokens, 2 * scale, top_only=True)
    if top > t.max_top_ngram_chars:
        return f"top_2gram ({top:.2f})", text
    rep = repeated_ngram_chars(tokens, 5 * scale, top_only=False)
    if rep > t.max_repeated_5gram_chars:
        return f"repeated_5grams ({rep:.2f})", text
    return None, text


class RuleFilter(FilterStep):
    """Drops documents failing a heuristic; strips boilerplate lines from the ones it keeps."""

    stage = "rules"

    def __init__(self, work_dir: str, thresholds: RuleThresholds, head_chars: int = 300):
        super().__init__(work_dir, head_chars)
        self.thresholds = thresholds

    def decide(self, doc: Document) -> str | None:
        reason, text = check_rules(doc.text, self.thresholds)
        if reason is None and text != doc.text:
            doc.metadata["boilerplate_chars_removed"] = len(doc.text) - len(text)
            doc.text = text
        return reason
