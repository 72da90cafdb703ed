"""Inter-annotator agreement on overlapping items: Cohen's kappa per annotator pair and
Krippendorff's alpha (nominal) over everyone, per criterion.

An item is one pair of responses to one comparison. Because each annotator saw the pair in their
own random order, a label is first put in a canonical order (the response stored first is
"first"): A/B become first/second, tie and both_bad stay as they are.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rewards.label_config import LabelStatsConfig
from rewards.store import CHOICES, LabelRecord, PreferenceStore

VALUES = ("first", "second", "tie", "both_bad")


def canonical(record: LabelRecord, criterion: str) -> tuple[tuple[int, int, int], str]:
    """The item (comparison, lower response id, higher id) and the choice in that canonical order."""
    a, b = record.response_a_id, record.response_b_id
    choice = record.choices[criterion]
    if choice in ("A", "B"):
        shown_first = "A" if a < b else "B"
        choice = "first" if choice == shown_first else "second"
    return (record.comparison_id, min(a, b), max(a, b)), choice


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two raters on the same items (nan when chance agreement is 1)."""
    n = len(first)
    if n == 0 or n != len(second):
        return math.nan
    observed = sum(x == y for x, y in zip(first, second, strict=True)) / n
    c1, c2 = Counter(first), Counter(second)
    expected = sum(c1[k] * c2[k] for k in c1) / (n * n)
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(ratings: dict[str, dict[tuple[int, int, int], str]]) -> float:
    """Krippendorff's alpha (nominal) over all annotators; items rated by one annotator are dropped."""
    import krippendorff
    import numpy as np

    counts = Counter(item for per in ratings.values() for item in per)
    items = sorted(i for i, c in counts.items() if c >= 2)
    if not items:
        return math.nan
    code = {v: float(i) for i, v in enumerate(VALUES)}
    data = np.array([[code[per[i]] if i in per else np.nan for i in items] for per in ratings.values()])
    if len({v for v in data.flatten() if not np.isnan(v)}) < 2:
        return math.nan  # one value used by everyone: alpha is undefined
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


@dataclass
class CriterionAgreement:
    criterion: str
    alpha: float
    overlapping_items: int
    kappa: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    """(kappa, shared items) per annotator pair with at least one item in common."""


def agreement(records: Sequence[LabelRecord], criteria: Sequence[str]) -> list[CriterionAgreement]:
    """Agreement per criterion on the items labelled by two or more annotators."""
    report = []
    for criterion in criteria:
        ratings: dict[str, dict[tuple[int, int, int], str]] = {}
        for record in records:
            item, value = canonical(record, criterion)
            ratings.setdefault(record.annotator, {})[item] = value
        result = CriterionAgreement(criterion, krippendorff_alpha(ratings), 0)
        counts = Counter(item for per in ratings.values() for item in per)
        result.overlapping_items = sum(c >= 2 for c in counts.values())
        for x, y in itertools.combinations(sorted(ratings), 2):
            shared = sorted(set(ratings[x]) & set(ratings[y]))
            if shared:
                result.kappa[(x, y)] = (
                    cohen_kappa([ratings[x][i] for i in shared], [ratings[y][i] for i in shared]),
                    len(shared),
                )
        report.append(result)
    return report


def format_report(report: Sequence[CriterionAgreement], records: Sequence[LabelRecord]) -> str:
    """The agreement report as Markdown tables (the admin view and `align label stats` print it)."""
    per_annotator = Counter(r.annotator for r in records)
    lines = [
        f"{len(records)} labels; choices are {', '.join(CHOICES)} (canonical order for agreement).",
        "",
        "Labels per annotator: "
        + (", ".join(f"{n} {c}" for n, c in sorted(per_annotator.items())) or "none"),
        "",
    ]
    lines += ["| criterion | Krippendorff's alpha | overlapping items |", "|---|---|---|"]
    lines += [f"| {r.criterion} | {_num(r.alpha)} | {r.overlapping_items} |" for r in report]
    pairs = sorted({pair for r in report for pair in r.kappa})
    if pairs:
        lines += ["", "Cohen's kappa per annotator pair (shared items):", ""]
        lines += ["| annotators | " + " | ".join(r.criterion for r in report) + " |"]
        lines += ["|---|" + "---|" * len(report)]
        for pair in pairs:
            cells = [
                f"{_num(r.kappa[pair][0])} ({r.kappa[pair][1]})" if pair in r.kappa else "-" for r in report
            ]
            lines.append(f"| {pair[0]} / {pair[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def print_stats(config: LabelStatsConfig) -> list[CriterionAgreement]:
    """`align label stats`: print agreement per criterion for the store."""
    store = PreferenceStore(config.store, create=False)
    try:
        records = store.labels()
        report = agreement(records, config.criteria)
        print(format_report(report, records))
        return report
    finally:
        store.close()
