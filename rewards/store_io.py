"""Filling the preference store (`align label add`) and exporting it for `align rm` (`align label export`).

What is exported: the latest revision of each label; never gold items or attention checks, never a
label an admin rejected, and none of an annotator whose gold accuracy is below
`min_gold_accuracy`.

Export rule (TRL's conversational preference format: `prompt` = messages, `chosen` / `rejected` =
one assistant message each):
- Per criterion, the labels of one response pair (by every annotator who saw it, in any A/B order)
  are counted: votes for each response; `tie` and `both_bad` vote for neither. A ranking of k
  responses counts as the k(k-1)/2 `overall` verdicts it implies: the better-ranked response of
  each pair gets the vote, a tied pair is a `tie`.
- The response with more votes is `chosen`; equal votes (including all-tie and all-both-bad pairs)
  give no row, because they carry no preference between the two (with `ties: tie`, a pair of
  equal votes and at least one tie is written as a row with `"tie": true` and margin 0).
- `margin` = (votes for chosen - votes for rejected) / labels of the pair, in (0, 1]: 1 when every
  annotator agreed. TRL's RewardTrainer subtracts it inside the loss, so clearer pairs push harder.
- A rewrite is a human response written to be better than what was shown: each gives rows
  rewrite > A and rewrite > B (margin 1, that annotator only), also when the verdict was both_bad.
- `criterion`: on a row of a criterion's own verdict, that criterion; on a row of the overall
  verdict, the criterion that decided it (whose votes favour `chosen` most; ties in the order
  helpful, harmless, honest), null when no criterion vote favours `chosen`. `align rm` reports its
  held-out accuracy per `criterion`. `annotators` lists the names behind a row; `comparison_id`
  ties rows back to the store.

For one scalar reward model, export `overall` only (the default): the criteria's own verdicts on
the same pair can disagree (a correct but rude reply is more helpful and less harmless than a polite
wrong one), and a single score cannot rank a pair both ways.

The other formats: `ranking` writes each ranking as it was given, Argilla RankingQuestion style
(`responses` in stored order, `ranking` = [{"value": index into responses, "rank": 1 = best}],
tied responses share a rank), and a decided pair label as a ranking of its two responses; `kto`
writes TRL's unpaired rows (`prompt`, `completion`, `label`): each response that is `chosen` in a
preference row is desirable (true), each `rejected` one undesirable (false); a response that is
both (the middle of a ranking) is left out.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from align.errors import InputError
from align.records import jsonl_objects
from rewards.label_config import ASPECTS, GOLD_KINDS, LabelAddConfig, LabelExportConfig
from rewards.selection import queue_comparisons, requeue_disagreements
from rewards.store import LabelRecord, PreferenceStore, RankingRecord, check_messages

log = logging.getLogger(__name__)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is an InputError naming it."""
    for number, row in jsonl_objects(path):
        if "prompt" not in row:
            raise InputError(f"{path}:{number}: expected an object with a 'prompt' key")
        yield number, row


def read_comparisons(path: Path) -> list[tuple[list[dict[str, str]], list[dict[str, Any]]]]:
    """Prompts with two or more responses each (strings, or {"text", "model", "checkpoint"})."""
    items = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        responses = row.get("responses")
        if not isinstance(responses, list) or len(responses) < 2:
            raise InputError(f"{where}: 'responses' must be a list of two or more responses")
        parsed = []
        for r in responses:
            r = {"text": r} if isinstance(r, str) else r
            if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                raise InputError(f"{where}: a response must be a string or an object with a 'text' string")
            parsed.append({"text": r["text"], "model": r.get("model"), "checkpoint": r.get("checkpoint")})
        items.append((check_messages(row["prompt"], where), parsed))
    return items


def read_gold(path: Path) -> list[tuple[list[dict[str, str]], str, str, str]]:
    """Gold items and attention checks: {"prompt", "better", "worse", "kind"?: gold|attention} per line."""
    items = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        better, worse, kind = row.get("better"), row.get("worse"), row.get("kind", "gold")
        if (
            not isinstance(better, str)
            or not isinstance(worse, str)
            or not better.strip()
            or not worse.strip()
        ):
            raise InputError(f"{where}: 'better' and 'worse' must be non-empty strings (the two responses)")
        if kind not in GOLD_KINDS:
            raise InputError(f"{where}: 'kind' must be one of {', '.join(GOLD_KINDS)}, got {kind!r}")
        items.append((check_messages(row["prompt"], where), better, worse, kind))
    return items


def generate_comparisons(config: LabelAddConfig) -> list[tuple[list[dict[str, str]], list[dict[str, Any]]]]:
    """k candidates per prompt from each checkpoint, through a rollout engine, one comparison per prompt."""
    from align.models import load_tokenizer
    from rollouts.base import Sampling
    from rollouts.factory import build_engine

    assert config.prompts is not None
    prompts = [
        check_messages(row["prompt"], f"{config.prompts}:{n}") for n, row in read_jsonl(config.prompts)
    ]
    if config.prompt_limit:
        prompts = prompts[: config.prompt_limit]
    candidates: list[list[dict[str, Any]]] = [[] for _ in prompts]
    sampling = Sampling(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, n=config.k, seed=config.seed
    )
    for checkpoint in config.checkpoints:
        tokenizer = load_tokenizer(checkpoint)
        engine = build_engine(config.engine, checkpoint)
        try:
            ids = [
                tokenizer.encode(
                    tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                    add_special_tokens=False,
                )
                for m in prompts
            ]
            log.info("generating %d x %d candidates with %s", len(ids), config.k, checkpoint)
            for rollout in engine.generate(ids, sampling):
                candidates[rollout.prompt_index].append(
                    {
                        "text": rollout.text.strip(),
                        "model": Path(checkpoint).name,
                        "checkpoint": str(checkpoint),
                    }
                )
        finally:
            engine.close()
    return list(zip(prompts, candidates, strict=True))


def add_to_store(config: LabelAddConfig) -> dict[str, int]:
    """`align label add`: import or generate comparisons, create annotators, assign the work."""
    store = PreferenceStore(config.store)
    try:
        added = gold = 0
        items = read_comparisons(config.jsonl) if config.jsonl is not None else []
        if config.prompts is not None:
            items += generate_comparisons(config)
        if items:  # all of them, or what `select` picks (rewards/selection.py)
            selected = queue_comparisons(
                store, items, config.select, config.budget, config.seed, config.task, config.reward_model
            )
            added = len(selected)
        if config.gold is not None:
            gold = len(store.add_gold(read_gold(config.gold)))
        people = 0
        if config.annotators is not None:
            for number, row in jsonl_objects(config.annotators):
                try:
                    store.add_annotator(row["name"], row["password"], row.get("role", "annotator"))
                except (KeyError, InputError) as err:
                    raise InputError(f"{config.annotators}:{number}: {err}") from None
                people += 1
        assigned = (
            store.assign(config.overlap, seed=config.seed, gold_rate=config.gold_rate)
            if store.annotators()
            else 0
        )
        if config.select == "disagreement":
            assigned += requeue_disagreements(store, config.overlap, config.budget, config.seed)
        total = store.comparison_count()
        log.info(
            "added %d comparisons (%d in the store) and %d gold items, %d annotators, %d new assignments",
            added,
            total,
            gold,
            people,
            assigned,
        )
        return {
            "added": added,
            "comparisons": total,
            "gold": gold,
            "annotators": people,
            "assignments": assigned,
        }
    finally:
        store.close()


def preference_rows(
    records: list[LabelRecord], criteria: list[str], min_margin: float = 0.0, ties: str = "skip"
) -> list[dict[str, Any]]:
    """TRL preference rows from labels (and the pairs rankings imply: `RankingRecord.implied_pairs`),
    by the rule in this module's docstring."""
    pairs: dict[tuple[int, int, int], dict[str, Any]] = {}
    for r in records:
        low, high = sorted((r.response_a_id, r.response_b_id))
        pair = pairs.setdefault(
            (r.comparison_id, low, high),
            {
                "messages": r.messages,
                "texts": {},
                "votes": defaultdict(Counter),
                "ties": Counter(),
                "labels": 0,
                "who": [],
            },
        )
        pair["texts"].update({r.response_a_id: r.response_a, r.response_b_id: r.response_b})
        pair["labels"] += 1
        pair["who"].append(r.annotator)
        for criterion, choice in r.choices.items():
            winner = {"A": r.response_a_id, "B": r.response_b_id}.get(choice)
            if winner is not None:
                pair["votes"][criterion][winner] += 1
            pair["ties"][criterion] += choice == "tie"
    rows = []
    for criterion in criteria:
        for (comparison_id, low, high), pair in pairs.items():
            votes, texts = pair["votes"][criterion], pair["texts"]
            if votes[low] == votes[high]:
                if ties == "tie" and pair["ties"][criterion]:
                    row = _row(
                        pair["messages"],
                        texts[low],
                        texts[high],
                        criterion,
                        0.0,
                        pair["who"],
                        comparison_id,
                    )
                    rows.append({**row, "tie": True})
                continue
            chosen, rejected = (low, high) if votes[low] > votes[high] else (high, low)
            margin = (votes[chosen] - votes[rejected]) / pair["labels"]
            if margin < min_margin:
                continue
            tag = criterion if criterion != "overall" else deciding_criterion(pair["votes"], chosen, rejected)
            rows.append(
                _row(
                    pair["messages"], texts[chosen], texts[rejected], tag, margin, pair["who"], comparison_id
                )
            )
        for r in records:
            if r.rewrite is not None:
                for shown in (r.response_a, r.response_b):
                    if shown != r.rewrite:  # an unchanged copy says nothing new
                        rows.append(
                            _row(r.messages, r.rewrite, shown, criterion, 1.0, [r.annotator], r.comparison_id)
                        )
    return rows


def deciding_criterion(votes: dict[str, Counter], chosen: int, rejected: int) -> str:
    """The criterion whose votes favour `chosen` most (ties: helpful, harmless, honest), or overall."""
    lead = {c: votes[c][chosen] - votes[c][rejected] for c in ASPECTS}
    best = max(lead, key=lambda c: lead[c])
    return best if lead[best] > 0 else "overall"


def _row(
    messages: list[dict[str, str]],
    chosen: str,
    rejected: str,
    criterion: str,
    margin: float,
    who: list[str],
    comparison_id: int,
) -> dict[str, Any]:
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "criterion": None if criterion == "overall" else criterion,
        "margin": round(margin, 4),
        "annotators": sorted(set(who)),
        "comparison_id": comparison_id,
    }


def ranking_rows(records: list[LabelRecord], rankings: list[RankingRecord]) -> list[dict[str, Any]]:
    """One row per ranking as given (Argilla RankingQuestion style), and per pair label whose
    overall verdict ranks its two responses (A, B or tie; both_bad ranks nothing)."""
    rows = []
    for r in rankings:
        rank = r.rank_of()
        rows.append(
            {
                "prompt": r.messages,
                "responses": [{"role": "assistant", "content": text} for text in r.texts.values()],
                "ranking": [{"value": n, "rank": rank[i]} for n, i in enumerate(r.texts)],
                "annotator": r.annotator,
                "comparison_id": r.comparison_id,
            }
        )
    for r in records:
        ranks = {"A": (1, 2), "B": (2, 1), "tie": (1, 1)}.get(r.choices["overall"])
        if ranks is not None:
            rows.append(
                {
                    "prompt": r.messages,
                    "responses": [
                        {"role": "assistant", "content": r.response_a},
                        {"role": "assistant", "content": r.response_b},
                    ],
                    "ranking": [{"value": 0, "rank": ranks[0]}, {"value": 1, "rank": ranks[1]}],
                    "annotator": r.annotator,
                    "comparison_id": r.comparison_id,
                }
            )
    return rows


def kto_rows(preferences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's unpaired rows from preference rows: chosen -> label true, rejected -> false, once per
    (comparison, completion); a completion on both sides (a ranking's middle) is left out."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for row in preferences:
        if row.get("tie"):
            continue
        for side, label in (("chosen", True), ("rejected", False)):
            text = row[side][0]["content"]
            key = (row["comparison_id"], text)
            if key in seen and seen[key]["label"] != label:
                seen[key]["label"] = None
            else:
                seen.setdefault(
                    key,
                    {
                        "prompt": row["prompt"],
                        "completion": row[side],
                        "label": label,
                        "comparison_id": row["comparison_id"],
                    },
                )
    return [row for row in seen.values() if row["label"] is not None]


def export_preferences(config: LabelExportConfig) -> Path:
    """`align label export`: write TRL-format preference JSONL that `align rm` trains on (or the
    rankings, or KTO rows: `format`)."""
    store = PreferenceStore(config.store, create=False)
    try:
        records, rankings = store.labels(), store.rankings()
        activity = store.activity()
    finally:
        store.close()
    if config.min_gold_accuracy > 0:
        dropped = {
            a.annotator
            for a in activity
            if a.gold_accuracy is not None and a.gold_accuracy < config.min_gold_accuracy
        }
        unmeasured = sorted(a.annotator for a in activity if a.gold_accuracy is None and a.labelled)
        if dropped:
            log.info(
                "leaving out %d annotators below gold accuracy %.2f: %s",
                len(dropped),
                config.min_gold_accuracy,
                ", ".join(sorted(dropped)),
            )
        if unmeasured:
            log.warning("no gold answers yet (kept): %s", ", ".join(unmeasured))
        records = [r for r in records if r.annotator not in dropped]
        rankings = [r for r in rankings if r.annotator not in dropped]
    pairwise = records + [pair for r in rankings for pair in r.implied_pairs()]
    if config.format == "ranking":
        rows = ranking_rows(records, rankings)
    else:
        rows = preference_rows(pairwise, config.criteria, config.min_margin, config.ties)
        if config.format == "kto":
            rows = kto_rows(rows)
    labels = len(records) + len(rankings)
    if not rows:
        raise InputError(f"{config.store}: nothing to export ({labels} labels, none decisive)")
    config.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.output.with_suffix(config.output.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in tqdm(rows, desc="export", disable=len(rows) < 1000):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(config.output)
    log.info("wrote %d %s rows from %d labels to %s", len(rows), config.format, labels, config.output)
    return config.output
