"""Inter-annotator agreement on overlapping items: Cohen's kappa per annotator pair and
Krippendorff's alpha (nominal) over everyone, per criterion; and each annotator's quality: accuracy
on gold items, attention checks passed, agreement with peers, median seconds per label, skip rate.

An item is one pair of responses to one comparison. Because each annotator saw the pair in their
own random order, a label is first put in a canonical order (the response stored first is
"first"): A/B become first/second, tie and both_bad stay as they are. A ranking counts as the
`overall` verdicts on the pairs it implies. Gold items are left out of agreement: they are scored
against their known answer instead.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rewards.label_config import LabelStatsConfig
from rewards.store import CHOICES, AnnotatorActivity, LabelRecord, PreferenceStore

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
            if criterion not in record.choices:  # a ranking's pairs: overall only
                continue
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


def peer_agreement(
    records: Sequence[LabelRecord], criterion: str = "overall"
) -> dict[str, tuple[float, int]]:
    """Per annotator: the share of (their label, a peer's label) pairs on the same item that agree
    on `criterion`, and how many such pairs there are."""
    ratings: dict[tuple[int, int, int], dict[str, str]] = {}
    for record in records:
        if criterion in record.choices:
            item, value = canonical(record, criterion)
            ratings.setdefault(item, {})[record.annotator] = value
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for per in ratings.values():
        for x, y in itertools.permutations(per, 2):
            total[x] += 1
            agree[x] += per[x] == per[y]
    return {name: (agree[name] / total[name], total[name]) for name in total}


def quality_table(activity: Sequence[AnnotatorActivity], records: Sequence[LabelRecord]) -> str:
    """Per annotator, as a Markdown table: labels, gold accuracy, attention checks passed,
    agreement with peers (overall), median seconds per label, skip rate, edits and rejections."""
    peers = peer_agreement(records)
    lines = [
        "| annotator | labels | gold accuracy | attention checks | agreement with peers | median s/label "
        "| skip rate | edits | rejected |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in activity:
        if not a.labelled and not a.skipped:
            continue
        gold = f"{a.gold_correct / a.gold:.0%} ({a.gold_correct}/{a.gold})" if a.gold else "-"
        attention = f"{a.attention_passed}/{a.attention}" if a.attention else "-"
        share, n = peers.get(a.annotator, (math.nan, 0))
        peer = f"{share:.0%} ({n})" if n else "-"
        median = f"{statistics.median(a.seconds):.1f}" if a.seconds else "-"
        skip_rate = a.skipped / (a.labelled + a.skipped)
        lines.append(
            f"| {a.annotator} | {a.labelled} | {gold} | {attention} | {peer} | {median} | {skip_rate:.0%} "
            f"| {a.edits} | {a.rejected} |"
        )
    return "\n".join(lines)


def format_report(
    report: Sequence[CriterionAgreement],
    records: Sequence[LabelRecord],
    activity: Sequence[AnnotatorActivity] | None = None,
) -> str:
    """The agreement report as Markdown tables (the admin view and `align label stats` print it),
    with the per-annotator quality table first when `activity` is given."""
    # A ranking's implied pairs share its label id: count it once.
    per_annotator = Counter(r.annotator for r in {r.label_id: r for r in records}.values())
    lines = []
    if activity is not None:
        lines += ["Annotators (gold items and attention checks are scored, never exported):", ""]
        lines += [quality_table(activity, records), ""]
    lines += [
        f"{per_annotator.total()} labels; choices are {', '.join(CHOICES)} (canonical order for agreement).",
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


def store_report(store: PreferenceStore, criteria: Sequence[str]) -> tuple[list[CriterionAgreement], str]:
    """Agreement over the store's labels (and the pairs its rankings imply) and the full report."""
    records = store.labels() + [pair for r in store.rankings() for pair in r.implied_pairs()]
    report = agreement(records, criteria)
    return report, format_report(report, records, store.activity())


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def print_stats(config: LabelStatsConfig) -> list[CriterionAgreement]:
    """`align label stats`: print each annotator's quality and agreement per criterion for the store."""
    store = PreferenceStore(config.store, create=False)
    try:
        report, text = store_report(store, config.criteria)
        print(text)
        return report
    finally:
        store.close()
