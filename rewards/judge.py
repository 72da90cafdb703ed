"""The demo's programmatic judge: labels comparisons with `rewards.rules`, through the store API the app uses.

The judge is an annotator like any other: it gets assignments, asks for its next task and records
one label per task, so its labels are stored, counted in agreement and exported exactly as a
person's.
"""

from __future__ import annotations

import logging
import secrets
import time

from tqdm import tqdm

from rewards.label_config import CRITERIA, LabelJudgeConfig
from rewards.rules import rule_reward, rule_scores
from rewards.store import PreferenceStore

log = logging.getLogger(__name__)


def verdict(score_a: float, score_b: float, tie_margin: float, bad_below: float) -> str:
    """A, B, tie or both_bad from two scores in [0, 1]."""
    if max(score_a, score_b) < bad_below:
        return "both_bad"
    if abs(score_a - score_b) <= tie_margin:
        return "tie"
    return "A" if score_a > score_b else "B"


def judge_store(config: LabelJudgeConfig) -> int:
    """`align label judge`: label every comparison the judge has not labelled yet; returns labels written."""
    store = PreferenceStore(config.store, create=False)
    try:
        if store.role(config.annotator) is None:
            # Nobody logs in as the judge: its password is random and never shown.
            store.add_annotator(config.annotator, secrets.token_urlsafe(24))
        store.assign(overlap=1, annotators=[config.annotator])
        _, remaining = store.progress(config.annotator)
        total = min(remaining, config.limit) if config.limit else remaining
        written = 0
        for _ in tqdm(range(total), desc="judge", disable=total < 100):
            task = store.next_task(config.annotator)
            if task is None:
                break
            start = time.perf_counter()
            a, b = rule_scores(task.messages, task.response_a), rule_scores(task.messages, task.response_b)
            a["overall"] = rule_reward(task.messages, task.response_a)
            b["overall"] = rule_reward(task.messages, task.response_b)
            choices = {c: verdict(a[c], b[c], config.tie_margin, config.bad_below) for c in CRITERIA}
            store.record_label(config.annotator, task.assignment_id, choices, time.perf_counter() - start)
            written += 1
        log.info("the judge %r labelled %d comparisons", config.annotator, written)
        return written
    finally:
        store.close()
