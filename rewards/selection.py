"""What to label next (`align label add --select`): random comparisons, the pairs the current reward
model is least sure about, or the comparisons annotators disagree on.

- `random` (the default): every new comparison, or `budget` of them drawn at random; the store
  shows each annotator one pair of a comparison's k responses (`PreferenceStore._pair`).
- `uncertain`: the reward model scores each prompt's k candidates; of each prompt's k(k-1)/2
  pairs the one with the smallest |score margin| is the pair it is least sure about, and the
  prompts whose least-sure pair has the smallest margin are queued first, as two-response
  comparisons (uncertainty sampling, Settles 2009; the margin of a Bradley-Terry model is the
  log-odds of its verdict, so a small one is a verdict near 50/50).
- `disagreement`: comparisons whose labels conflict (annotators gave different `overall`
  verdicts on the same pair, in response terms: this one, that one, tie, both bad) go to `overlap`
  more annotators each, most split first, so that more votes settle them.

`budget` counts comparisons that are new to the store: a pair already there is passed over, so a
later round with a newer reward model queues `budget` new pairs rather than the same ones again.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.agreement import canonical
from rewards.store import LabelRecord, PreferenceStore

log = logging.getLogger(__name__)

Item = tuple[list[dict[str, str]], list[dict[str, Any]]]
"""A prompt (messages) and its candidate responses ({"text", "model"?, "checkpoint"?} each)."""


def least_sure_pairs(items: Sequence[Item], reward_model: Path) -> list[tuple[Item, float]]:
    """Each prompt's least-sure pair (smallest |RM score margin|, two different texts) with that
    margin, smallest margin first; prompts whose candidates are all the same text are left out."""
    from align.models import load_tokenizer
    from rewards.model import load_reward_model, score

    tokenizer = load_tokenizer(reward_model)
    model = load_reward_model(reward_model)
    conversations = [
        [*messages, {"role": "assistant", "content": r["text"]}]
        for messages, responses in items
        for r in responses
    ]
    log.info("scoring %d candidates of %d prompts with %s", len(conversations), len(items), reward_model)
    scores = iter(score(model, tokenizer, conversations))
    ranked = []
    for messages, responses in items:
        scored = [(r, next(scores)) for r in responses]
        pairs = [
            (abs(sa - sb), [a, b])
            for i, (a, sa) in enumerate(scored)
            for b, sb in scored[i + 1 :]
            if a["text"] != b["text"]
        ]
        if pairs:
            margin, pair = min(pairs, key=lambda p: p[0])
            ranked.append(((messages, pair), margin))
    ranked.sort(key=lambda x: x[1])
    return ranked


def add_new(store: PreferenceStore, ordered: Sequence[Item], budget: int, task: str) -> list[int]:
    """Add `ordered` comparisons in order until `budget` of them were new to the store (0: all)."""
    if not budget:
        return store.add_comparisons(ordered, task)
    added: list[int] = []
    start = 0
    while len(added) < budget and start < len(ordered):
        chunk = ordered[start : start + budget - len(added)]
        start += len(chunk)
        added += store.add_comparisons(chunk, task)  # it skips comparisons it already holds
    return added


def queue_comparisons(
    store: PreferenceStore,
    items: Sequence[Item],
    select: str,
    budget: int,
    seed: int,
    task: str = "pair",
    reward_model: Path | None = None,
) -> list[int]:
    """Add the comparisons `select` picks from `items` (see the module docstring); their ids."""
    if select == "uncertain":
        assert reward_model is not None  # LabelAddConfig requires it
        ranked = least_sure_pairs(items, reward_model)
        added = add_new(store, [item for item, _ in ranked], budget, task)
        if ranked:
            chosen = [margin for _, margin in ranked[: len(added)]]
            log.info(
                "queued the least-sure pair of %d of %d prompts: |margin| median %.3f (all prompts' %.3f)",
                len(added),
                len(items),
                statistics.median(chosen) if chosen else float("nan"),
                statistics.median(margin for _, margin in ranked),
            )
        return added
    ordered = list(items)
    if budget:
        random.Random(seed).shuffle(ordered)
    return add_new(store, ordered, budget, task)


def disagreements(records: Sequence[LabelRecord]) -> dict[int, float]:
    """Comparisons whose `overall` labels of one pair conflict, each with the share of that pair's
    labels on its most common verdict (0.5 for a 1-1 split; lower is more split)."""
    verdicts: dict[tuple[int, int, int], Counter] = defaultdict(Counter)
    for record in records:
        item, choice = canonical(record, "overall")
        verdicts[item][choice] += 1
    split: dict[int, float] = {}
    for (comparison_id, _, _), counts in verdicts.items():
        if len(counts) > 1:
            share = max(counts.values()) / sum(counts.values())
            split[comparison_id] = min(share, split.get(comparison_id, 1.0))
    return split


def requeue_disagreements(store: PreferenceStore, extra: int, budget: int, seed: int) -> int:
    """Give each comparison with conflicting labels to `extra` more annotators (at most everyone),
    most split first, at most `budget` comparisons (0: all); returns the new assignments. Run again
    before those are labelled, it assigns nothing new: the target counts labellers, not queues."""
    records = store.labels() + [pair for ranking in store.rankings() for pair in ranking.implied_pairs()]
    split = disagreements(records)
    labellers: dict[int, set[str]] = defaultdict(set)
    for record in records:
        labellers[record.comparison_id].add(record.annotator)
    people = len(store.annotators())
    order = sorted(split, key=lambda c: (split[c], c))[: budget or None]
    by_target: dict[int, list[int]] = defaultdict(list)
    for comparison_id in order:
        target = min(len(labellers[comparison_id]) + extra, people)
        if target > len(labellers[comparison_id]):
            by_target[target].append(comparison_id)
    created = sum(
        store.assign(target, seed=seed, comparisons=ids) for target, ids in sorted(by_target.items())
    )
    everyone = len(order) - sum(len(ids) for ids in by_target.values())
    log.info(
        "%d comparisons with conflicting labels: %d re-queued (%d new assignments), %d already seen by "
        "all %d annotators",
        len(split),
        len(order) - everyone,
        created,
        everyone,
        people,
    )
    return created
