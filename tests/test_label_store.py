"""The preference store, agreement, the judge and import/export, on real SQLite files and a real
PostgreSQL server (started by the session's `postgres_server` fixture from Debian's packages)."""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from align.cli import main
from rewards.agreement import agreement, cohen_kappa
from rewards.store import PreferenceStore

ALL = ("helpful", "harmless", "honest", "overall")


def every(choice: str) -> dict[str, str]:
    return dict.fromkeys(ALL, choice)


def pair(question: str, first: str, second: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return [{"role": "user", "content": question}], [{"text": first}, {"text": second}]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store's URL: an SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.sqlite'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(store_url: str):
    s = PreferenceStore(store_url)
    yield s
    s.close()


def shown(task, canonical: str) -> str:
    """The A/B choice meaning `canonical` (first/second = the response whose text starts so)."""
    if canonical not in ("first", "second"):
        return canonical
    return "A" if task.response_a.startswith(canonical) else "B"


def label_all(
    store: PreferenceStore, name: str, canonical: list[str], rewrite: dict[int, str] | None = None
) -> None:
    for i, choice in enumerate(canonical):
        task = store.next_task(name)
        store.record_label(name, task.assignment_id, every(shown(task, choice)), 1.0, (rewrite or {}).get(i))


def test_sqlite_store_runs_in_wal_mode_and_keeps_labels_after_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    store = PreferenceStore(url)
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign()
    store.record_label("ann", store.next_task("ann").assignment_id, every("tie"), 2.5)
    store.close()
    with sqlite3.connect(tmp_path / "labels.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = PreferenceStore(url)
    (label,) = reopened.labels()
    assert (label.annotator, label.choices["overall"], label.seconds) == ("ann", "tie", 2.5)
    assert reopened.progress("ann") == (1, 0)
    reopened.close()


def test_passwords_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    store = PreferenceStore(f"sqlite:///{tmp_path / 'labels.sqlite'}")
    store.add_annotator("ann", "s3cret")
    assert store.check_password("ann", "s3cret")
    assert not store.check_password("ann", "S3cret")
    assert not store.check_password("nobody", "s3cret")
    store.close()
    with sqlite3.connect(tmp_path / "labels.sqlite") as db:
        (stored,) = db.execute("SELECT password_hash FROM annotators").fetchone()
    assert "s3cret" not in stored and stored.startswith("pbkdf2_sha256$")


def test_assign_gives_each_comparison_to_overlap_annotators_with_balanced_load(
    store: PreferenceStore,
) -> None:
    for name in ("a", "b", "c", "d"):
        store.add_annotator(name, "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(10)])
    assert store.assign(overlap=2) == 20
    assert store.assign(overlap=2) == 0  # idempotent: nothing new to assign
    assert [store.progress(n)[1] for n in "abcd"] == [5, 5, 5, 5]


def test_the_shown_order_is_randomised_per_assignment(store: PreferenceStore) -> None:
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(40)])
    store.assign()
    first_shown_as_a = 0
    while (task := store.next_task("ann")) is not None:
        first_shown_as_a += task.response_a == "first"
        store.skip("ann", task.assignment_id)
    assert 10 <= first_shown_as_a <= 30


def test_an_annotator_cannot_write_or_change_another_annotators_label(store: PreferenceStore) -> None:
    store.add_annotator("owner", "pw")
    store.add_annotator("other", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign(overlap=1, annotators=["owner"])
    task = store.next_task("owner")
    store.record_label("owner", task.assignment_id, every("A"))
    with pytest.raises(PermissionError, match="not assigned to 'other'"):
        store.record_label("other", task.assignment_id, every("B"), rewrite="hijack")
    with pytest.raises(PermissionError):
        store.skip("other", task.assignment_id)
    (label,) = store.labels()
    assert (label.annotator, label.choices, label.rewrite) == ("owner", every("A"), None)


def test_resubmitting_revises_the_label_instead_of_adding_one(store: PreferenceStore) -> None:
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign()
    task = store.next_task("ann")
    store.record_label("ann", task.assignment_id, every("A"))
    store.record_label("ann", task.assignment_id, every("both_bad"), rewrite="better")
    (label,) = store.labels()
    assert label.choices == every("both_bad") and label.rewrite == "better"
    assert store.label_count() == 1


def test_a_label_must_set_every_criterion_to_a_known_choice(store: PreferenceStore) -> None:
    from align.errors import InputError

    store.add_annotator("ann", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign()
    task = store.next_task("ann")
    with pytest.raises(InputError, match="overall"):
        store.record_label("ann", task.assignment_id, {"helpful": "A", "harmless": "A", "honest": "A"})
    with pytest.raises(InputError, match="maybe"):
        store.record_label("ann", task.assignment_id, {**every("A"), "honest": "maybe"})


def test_kappa_and_alpha_match_a_hand_computed_example(store: PreferenceStore) -> None:
    # Six items, two annotators, in canonical order:
    #   x: first first first  second second tie
    #   y: first first second second second second
    # kappa: p_o = 4/6, p_e = (3*2 + 2*4 + 1*0)/36 = 14/36, kappa = (24 - 14)/(36 - 14) = 10/22.
    # alpha (nominal): 12 values (first 5, second 6, tie 1); 2 disagreeing units give D_o = 4/12;
    # D_e = (144 - 25 - 36 - 1)/(12*11) = 82/132; alpha = 1 - (44/132)/(82/132) = 38/82.
    store.add_annotator("x", "pw")
    store.add_annotator("y", "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(6)])
    store.assign(overlap=2, seed=3)
    label_all(store, "x", ["first", "first", "first", "second", "second", "tie"])
    label_all(store, "y", ["first", "first", "second", "second", "second", "second"])
    (overall,) = agreement(store.labels(), ["overall"])
    kappa, shared = overall.kappa[("x", "y")]
    assert shared == 6 and overall.overlapping_items == 6
    assert kappa == pytest.approx(10 / 22)
    assert overall.alpha == pytest.approx(38 / 82)
    assert math.isnan(cohen_kappa(["tie", "tie"], ["tie", "tie"]))


def test_export_keeps_majorities_drops_ties_and_both_bad_and_adds_rewrites(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        store.add_annotator(name, "pw")
    store.add_comparisons(
        [pair("unanimous?", "first U", "second U"), pair("majority?", "first M", "second M")]
        + [pair("split?", "first S", "second S"), pair("all tie?", "first T", "second T")]
    )
    store.assign(overlap=3)
    label_all(store, "a", ["first", "second", "first", "tie"], rewrite={3: "a rewrite"})
    label_all(store, "b", ["first", "second", "second", "tie"])
    label_all(store, "c", ["first", "tie", "both_bad", "tie"])
    output = tmp_path / "preferences.jsonl"
    assert main(["label", "export", "--store", store_url, "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    found = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r for r in rows}
    assert set(found) == {
        ("first U", "second U"),
        ("second M", "first M"),
        ("a rewrite", "first T"),
        ("a rewrite", "second T"),
    }
    assert found[("first U", "second U")]["margin"] == 1.0
    assert found[("second M", "first M")]["margin"] == pytest.approx(2 / 3, abs=1e-4)
    assert found[("second M", "first M")]["annotators"] == ["a", "b", "c"]
    assert found[("a rewrite", "first T")]["annotators"] == ["a"]
    # Every criterion voted with the overall verdict: the first of them is named as the decider.
    assert found[("first U", "second U")]["criterion"] == "helpful"
    assert found[("a rewrite", "first T")]["criterion"] is None  # a rewrite: better overall
    assert all(r["prompt"][0]["role"] == "user" for r in rows)
    assert all(r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant" for r in rows)


def test_export_of_overall_names_the_deciding_criterion_and_never_ranks_a_pair_both_ways(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    """A correct but rude reply: more helpful, less harmless. The per-criterion verdicts disagree;
    the overall export has one row per pair, tagged with the criterion that decided it."""
    store.add_annotator("judge", "pw")
    store.add_comparisons([pair("What is 2 + 3?", "first: 5, idiot", "second: 6")])
    store.assign()
    task = store.next_task("judge")
    choices = {"helpful": "first", "harmless": "second", "honest": "first", "overall": "first"}
    store.record_label("judge", task.assignment_id, {c: shown(task, v) for c, v in choices.items()}, 1.0)
    url = store_url
    by_criterion = tmp_path / "by_criterion.jsonl"
    args = ["label", "export", "--store", url, "--output"]
    assert main([*args, str(by_criterion), "--criteria", '["helpful", "harmless"]']) == 0
    rows = [json.loads(line) for line in by_criterion.read_text().splitlines()]
    assert {(r["criterion"], r["chosen"][0]["content"]) for r in rows} == {
        ("helpful", "first: 5, idiot"),
        ("harmless", "second: 6"),
    }
    overall = tmp_path / "overall.jsonl"
    assert main([*args, str(overall)]) == 0
    (row,) = [json.loads(line) for line in overall.read_text().splitlines()]
    assert (row["criterion"], row["chosen"][0]["content"]) == ("helpful", "first: 5, idiot")


def test_label_add_imports_jsonl_creates_annotators_and_assigns(store_url: str, tmp_path: Path) -> None:
    data = tmp_path / "candidates.jsonl"
    rows = [
        {
            "prompt": "What is 2 + 3?",
            "responses": ["2 + 3 = 5.", {"text": "6", "model": "sft", "checkpoint": "s1"}],
        },
        {"prompt": [{"role": "user", "content": "Hi"}], "responses": ["Hello!", "Go away.", "Hi."]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    people = tmp_path / "annotators.jsonl"
    people.write_text(
        '{"name": "ann", "password": "pw"}\n{"name": "boss", "password": "pw", "role": "admin"}\n'
    )
    url = store_url
    args = [
        "label",
        "add",
        "--store",
        url,
        "--jsonl",
        str(data),
        "--annotators",
        str(people),
        "--overlap",
        "2",
    ]
    assert main(args) == 0
    store = PreferenceStore(url)
    assert store.comparison_count() == 2 and store.annotators() == ["ann", "boss"]
    assert store.progress("ann") == (0, 2) and store.role("boss") == "admin"
    store.close()
    assert main(args) == 0  # a re-run (e.g. after an interruption) adds nothing twice
    store = PreferenceStore(url)
    assert store.comparison_count() == 2 and store.progress("ann") == (0, 2)
    store.close()


def test_label_add_names_the_file_and_line_of_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "responses": ["a", "b"]}\n{"prompt": "q", "responses": ["only one"]}\n')
    assert main(["label", "add", "--store", f"sqlite:///{tmp_path / 'l.sqlite'}", "--jsonl", str(data)]) == 1
    assert f"{data}:2: 'responses' must be a list of two or more" in capsys.readouterr().err


def test_label_commands_reject_a_store_that_is_not_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", "stats", "--store", "labels.sqlite"]) == 2
    assert "store: expected an SQLAlchemy URL" in capsys.readouterr().err


def test_the_judge_labels_through_the_store_and_prefers_the_correct_answer(
    store_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "candidates.jsonl"
    rows = [
        {"prompt": "What is 2 + 3?", "responses": ["2 + 3 = 7.", "2 + 3 = 5."]},
        {"prompt": "Which is larger, 4 or 9?", "responses": ["9 is larger.", "4 is larger."]},
        {
            "prompt": "How can I steal a car?",
            "responses": ["Sorry, I can't help with that.", "Break a window."],
        },
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    url = store_url
    assert main(["label", "add", "--store", url, "--jsonl", str(data)]) == 0
    assert main(["label", "judge", "--store", url]) == 0
    assert main(["label", "judge", "--store", url]) == 0  # nothing left: no duplicates
    store = PreferenceStore(url)
    labels = store.labels()
    store.close()
    assert len(labels) == 3 and {r.annotator for r in labels} == {"rule-judge"}
    winners = {r.response_a if r.choices["overall"] == "A" else r.response_b for r in labels}
    assert winners == {"2 + 3 = 5.", "9 is larger.", "Sorry, I can't help with that."}


def test_label_stats_prints_agreement_per_criterion(store: PreferenceStore, store_url: str, capsys) -> None:
    store.add_annotator("x", "pw")
    store.add_annotator("y", "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(4)])
    store.assign(overlap=2)
    label_all(store, "x", ["first", "second", "first", "tie"])
    label_all(store, "y", ["first", "second", "second", "tie"])
    assert main(["label", "stats", "--store", store_url]) == 0
    out = capsys.readouterr().out
    assert "| overall |" in out and "| x / y |" in out and "(4)" in out
    assert "Labels per annotator: x 4, y 4" in out


# --- editing and review: labels are append-only revisions; the latest counts


def export_rows(url: str, tmp_path: Path, *args: str) -> list[dict]:
    output = tmp_path / "export.jsonl"
    assert main(["label", "export", "--store", url, "--output", str(output), *args]) == 0
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_editing_a_label_adds_a_revision_keeps_the_old_one_and_export_takes_the_latest(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign()
    task = store.next_task("ann")
    first = store.record_label("ann", task.assignment_id, every(shown(task, "first")), 3.0)
    assert export_rows(store_url, tmp_path)[0]["chosen"][0]["content"] == "first"
    editing = store.task("ann", task.assignment_id)
    assert (editing.revision, editing.choices) == (1, every(shown(task, "first")))
    second = store.record_label(
        "ann", task.assignment_id, every(shown(task, "second")), 1.5, rewrite="better"
    )
    history = store.label_history(task.assignment_id)
    assert [(h.label_id, h.revision, h.choices["overall"], h.rewrite) for h in history] == [
        (first, 1, shown(task, "first"), None),
        (second, 2, shown(task, "second"), "better"),
    ]
    (label,) = store.labels()
    assert (label.label_id, label.revision, label.rewrite) == (second, 2, "better")
    assert store.label_count() == 1 and store.progress("ann") == (1, 0)
    rows = export_rows(store_url, tmp_path)
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} == {
        ("second", "first"),
        ("better", "first"),
        ("better", "second"),
    }
    (recent,) = store.recent_labels("ann")
    assert (recent.assignment_id, recent.revision, recent.prompt) == (task.assignment_id, 2, "q?")


def test_an_admin_rejects_a_label_with_a_reason_and_export_leaves_it_out(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    store.add_annotator("boss", "pw", "admin")
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair("q1?", "first 1", "second 1"), pair("q2?", "first 2", "second 2")])
    store.assign(annotators=["ann"])
    label_all(store, "ann", ["first", "first"])
    rejected, kept = store.labels()
    with pytest.raises(PermissionError, match="not an admin"):
        store.reject_label("ann", rejected.label_id, "mine")
    store.reject_label("boss", rejected.label_id, "picked without reading")
    assert [r.label_id for r in store.labels()] == [kept.label_id]
    assert [r.rejected for r in store.labels(include_rejected=True)] == ["picked without reading", None]
    assert [r["chosen"][0]["content"] for r in export_rows(store_url, tmp_path)] == ["first 2"]
    # The annotator's next revision is a new label, not the rejected one: it counts again.
    store.record_label("ann", rejected.assignment_id, every("tie"))
    assert [r.revision for r in store.labels()] == [1, 2]


def test_an_annotator_sees_and_edits_only_their_own_labels(store: PreferenceStore) -> None:
    store.add_annotator("owner", "pw")
    store.add_annotator("other", "pw")
    store.add_comparisons([pair("q?", "first", "second")])
    store.assign(overlap=1, annotators=["owner"])
    task = store.next_task("owner")
    store.record_label("owner", task.assignment_id, every("A"))
    assert store.recent_labels("other") == []
    with pytest.raises(PermissionError, match="not assigned to 'other'"):
        store.task("other", task.assignment_id)


# --- gold items and attention checks


def gold_item(n: int, kind: str = "gold") -> tuple[list[dict[str, str]], str, str, str]:
    return [{"role": "user", "content": f"gold question {n}?"}], f"gold better {n}", f"gold worse {n}", kind


def test_gold_items_are_mixed_into_queues_at_the_rate_and_never_exported(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    store.add_annotator("ann", "pw")
    store.add_comparisons([pair(f"q{i}?", f"first {i}", f"second {i}") for i in range(200)])
    store.add_gold([gold_item(n) for n in range(100)])
    assert store.comparison_count() == 200 and len(store.gold_comparison_ids()) == 100
    assigned = store.assign(gold_rate=0.2, seed=4)
    gold = assigned - 200
    # A share of 0.2 of the queue: 200 * 0.2 / 0.8 = 50 expected (binomial-ish spread).
    assert 30 <= gold <= 70
    seen_gold, positions, right, n = set(), [], 0, 0
    while (task := store.next_task("ann")) is not None:
        if task.response_a.startswith("gold"):
            seen_gold.add(task.comparison_id)
            positions.append(n)
            right += task.response_a.startswith("gold better")  # A is the answer below
        store.record_label(
            "ann", task.assignment_id, every("A" if positions[-1:] == [n] else shown(task, "first"))
        )
        n += 1
    assert len(seen_gold) == len(positions) == gold  # each gold item at most once per annotator
    assert positions[0] < n / 3 and positions[-1] > 2 * n / 3  # spread through the queue, not bunched
    assert store.progress("ann") == (200 + gold, 0)
    assert len(store.labels()) == 200 and len(store.labels(include_gold=True)) == 200 + gold
    rows = export_rows(store_url, tmp_path)
    assert len(rows) == 200 and not any("gold" in json.dumps(r) for r in rows)
    (activity,) = store.activity()
    assert (activity.gold, activity.gold_correct) == (gold, right)


def label_with_gold(store: PreferenceStore, name: str, canonical: list[str], gold_right: list[bool]) -> None:
    """Label the annotator's queue: ordinary items by `canonical` ("skip" skips one), gold items
    right or wrong in turn; the labels take 1, 2, 3, ... seconds."""
    ordinary, gold, second = iter(canonical), iter(gold_right), 0
    while (task := store.next_task(name)) is not None:
        if task.response_a.startswith("gold") or task.response_b.startswith("gold"):
            better = "A" if task.response_a.startswith("gold better") else "B"
            choice = better if next(gold) else {"A": "B", "B": "A"}[better]
        else:
            choice = next(ordinary, None)
            if choice == "skip":
                store.skip(name, task.assignment_id)
                continue
            choice = shown(task, choice)
        second += 1
        store.record_label(name, task.assignment_id, every(choice), float(second))


def test_stats_report_gold_accuracy_attention_agreement_with_peers_time_and_skip_rate(
    store: PreferenceStore, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.add_annotator("x", "pw")
    store.add_annotator("y", "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(5)])
    store.add_gold([gold_item(0), gold_item(1, "attention")])
    store.assign(overlap=2, gold_rate=0.9, seed=1)
    assert [store.progress(n)[1] for n in "xy"] == [7, 7]  # 5 ordinary + both gold items each
    # x: gold right, attention check failed; y: both right; y skips the last ordinary item.
    label_with_gold(store, "x", ["first", "second", "first", "tie", "first"], [True, False])
    label_with_gold(store, "y", ["first", "second", "second", "tie", "skip"], [True, True])
    x, y = store.activity()
    assert (x.labelled, x.gold, x.gold_correct, x.attention, x.attention_passed, x.skipped) == (
        7,
        1,
        1,
        1,
        0,
        0,
    )
    assert (y.labelled, y.gold, y.gold_correct, y.attention, y.attention_passed, y.skipped) == (
        6,
        1,
        1,
        1,
        1,
        1,
    )
    assert main(["label", "stats", "--store", store_url]) == 0
    out = capsys.readouterr().out
    # Peers: 4 shared ordinary items, 3 agree -> 75% (4); median of 1..7 s and of 1..6 s; y skipped
    # 1 of 7 assignments.
    assert "| x | 7 | 100% (1/1) | 0/1 | 75% (4) | 4.0 | 0% | 0 | 0 |" in out
    assert "| y | 6 | 100% (1/1) | 1/1 | 75% (4) | 3.5 | 14% | 0 | 0 |" in out
    assert "Labels per annotator: x 5, y 4" in out  # agreement is over ordinary items only


def test_export_leaves_out_annotators_below_the_gold_accuracy_threshold(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    for name in ("careful", "careless", "new"):
        store.add_annotator(name, "pw")
    store.add_comparisons([pair(f"q{i}?", f"first {i}", f"second {i}") for i in range(3)])
    store.add_gold([gold_item(0), gold_item(1)])
    store.assign(annotators=["careful", "careless"], overlap=1, gold_rate=0.9, seed=1)
    later = store.add_comparisons([pair("q new?", "first new", "second new")])
    store.assign(annotators=["new"], comparisons=later)  # no gold for "new": unmeasured, kept
    assert [store.progress(n)[1] for n in ("careful", "careless")] == [2 + 2, 1 + 2]
    label_with_gold(store, "careful", ["first", "first"], [True, True])
    label_with_gold(store, "careless", ["second"], [False, True])
    label_with_gold(store, "new", ["first"], [])
    everyone = {r["annotators"][0] for r in export_rows(store_url, tmp_path)}
    assert everyone == {"careful", "careless", "new"}
    kept = export_rows(store_url, tmp_path, "--min_gold_accuracy", "0.6")
    assert {r["annotators"][0] for r in kept} == {"careful", "new"}
    assert len(kept) == 3


# --- rankings of more than two responses


RANKED = ["r1 (tied with r4)", "r2 (best)", "r3 (worst)", "r4 (tied with r1)"]
RANK_OF = {RANKED[0]: 2, RANKED[1]: 1, RANKED[2]: 3, RANKED[3]: 2}


def rank_four(store: PreferenceStore) -> None:
    store.add_annotator("ranker", "pw")
    store.add_comparisons(
        [([{"role": "user", "content": "Rank these."}], [{"text": t} for t in RANKED])], task="rank"
    )
    store.assign(seed=5)
    task = store.next_task("ranker")
    assert task.kind == "rank" and sorted(task.responses) == sorted(RANKED)
    assert list(task.responses) != RANKED  # this seed shows them shuffled
    store.record_ranking("ranker", task.assignment_id, [RANK_OF[t] for t in task.responses], 4.0)


def test_a_ranking_with_ties_exports_exactly_the_pairs_it_implies(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    rank_four(store)
    r1, r2, r3, r4 = RANKED
    # By hand: r2 beats everyone, r1 and r4 beat r3, r1 = r4 is a tie (no preference).
    by_hand = [(r2, r1), (r2, r3), (r2, r4), (r1, r3), (r4, r3)]
    rows = export_rows(store_url, tmp_path)
    assert sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows) == sorted(by_hand)
    assert {r["margin"] for r in rows} == {1.0} and {r["criterion"] for r in rows} == {None}
    with_ties = export_rows(store_url, tmp_path, "--ties", "tie")
    ties = [
        (r["chosen"][0]["content"], r["rejected"][0]["content"], r["margin"])
        for r in with_ties
        if r.get("tie")
    ]
    assert ties == [(r1, r4, 0.0)]
    assert len(with_ties) == len(by_hand) + 1


def test_a_ranking_exports_as_a_ranking_and_as_unpaired_kto_rows(
    store: PreferenceStore, store_url: str, tmp_path: Path
) -> None:
    rank_four(store)
    (row,) = export_rows(store_url, tmp_path, "--format", "ranking")
    assert [r["content"] for r in row["responses"]] == RANKED  # stored order
    assert row["ranking"] == [
        {"value": 0, "rank": 2},
        {"value": 1, "rank": 1},
        {"value": 2, "rank": 3},
        {"value": 3, "rank": 2},
    ]
    assert row["annotator"] == "ranker" and row["prompt"] == [{"role": "user", "content": "Rank these."}]
    kto = export_rows(store_url, tmp_path, "--format", "kto")
    # r2 only ever chosen, r3 only ever rejected; r1 and r4 are both (the middle): left out.
    assert sorted((r["completion"][0]["content"], r["label"]) for r in kto) == [
        (RANKED[1], True),
        (RANKED[2], False),
    ]


def test_a_ranking_needs_one_rank_per_response_and_is_edited_like_a_label(store: PreferenceStore) -> None:
    from align.errors import InputError

    rank_four(store)
    (ranking,) = store.rankings()
    assert ranking.ranking == [
        [ranking_id(ranking, RANKED[1])],
        sorted_ids(ranking, RANKED[0], RANKED[3]),
        [ranking_id(ranking, RANKED[2])],
    ]
    task = store.task("ranker", ranking.assignment_id)
    assert task.revision == 1 and [RANK_OF[t] for t in task.responses] == list(task.ranks)
    with pytest.raises(InputError, match="a rank from 1 to 4"):
        store.record_ranking("ranker", task.assignment_id, [1, 2, 3])
    with pytest.raises(InputError, match="a rank from 1 to 4"):
        store.record_ranking("ranker", task.assignment_id, [1, 2, 3, 5])
    with pytest.raises(InputError, match="is a ranking"):
        store.record_label("ranker", task.assignment_id, every("A"))
    store.record_ranking("ranker", task.assignment_id, [1, 1, 1, 1])  # all tied: a revision
    (edited,) = store.rankings()
    assert edited.revision == 2 and len(edited.ranking) == 1
    assert [h.revision for h in store.label_history(task.assignment_id)] == [1, 2]


def ranking_id(record, text: str) -> int:
    return next(i for i, t in record.texts.items() if t == text)


def sorted_ids(record, *texts: str) -> list[int]:
    return sorted(ranking_id(record, t) for t in texts)


def test_label_add_imports_rankings_and_gold_from_jsonl(store_url: str, tmp_path: Path) -> None:
    data = tmp_path / "candidates.jsonl"
    data.write_text(json.dumps({"prompt": "Rank?", "responses": ["a", "b", "c"]}) + "\n")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        json.dumps({"prompt": "2 + 2?", "better": "4", "worse": "5"})
        + "\n"
        + json.dumps(
            {
                "prompt": "Pick the reply in English.",
                "better": "Hello.",
                "worse": "xq zz",
                "kind": "attention",
            }
        )
        + "\n"
    )
    people = tmp_path / "annotators.jsonl"
    people.write_text('{"name": "ann", "password": "pw"}\n')
    args = ["label", "add", "--store", store_url, "--jsonl", str(data), "--task", "rank", "--gold", str(gold)]
    assert main([*args, "--gold_rate", "0.9", "--annotators", str(people)]) == 0
    store = PreferenceStore(store_url)
    try:
        assert store.comparison_count() == 1 and len(store.gold_comparison_ids()) == 2
        kinds = []
        while (task := store.next_task("ann")) is not None:
            kinds.append(task.kind)
            store.skip("ann", task.assignment_id)
    finally:
        store.close()
    # The ranking, and gold items (pairs) mixed in before it: how many is a draw at gold_rate.
    assert kinds.count("rank") == 1 and kinds[-1] == "rank" and set(kinds[:-1]) <= {"pair"}


def test_label_add_and_export_reject_bad_gold_and_options(tmp_path: Path, capsys) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"prompt": "q", "better": "x", "worse": "y", "kind": "bonus"}) + "\n")
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    assert main(["label", "add", "--store", url, "--gold", str(gold)]) == 1
    assert f"{gold}:1: 'kind' must be one of gold, attention" in capsys.readouterr().err
    assert main(["label", "add", "--store", url, "--task", "sort"]) == 2
    assert "task: expected one of pair, rank" in capsys.readouterr().err
    assert main(["label", "export", "--store", url, "--format", "csv"]) == 2
    assert "format: expected one of preference, ranking, kto" in capsys.readouterr().err


# --- many writers and a crash halfway; a store of the previous version

CROWD = [f"ann{i:02d}" for i in range(20)]
LABELS_EACH = 50
WRITER = """
import sys, threading, time
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from rewards.label_config import CRITERIA
from rewards.store import PreferenceStore

url, names, each = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
store = PreferenceStore(url, create=False)
errors, retries = [], []

def label(name):
    while True:
        try:
            if store.progress(name)[0] >= each:
                return
            task = store.next_task(name)
            store.record_label(name, task.assignment_id, dict.fromkeys(CRITERIA, "A"), 0.5)
        except IntegrityError as err:  # a duplicate: a bug, not an outage
            errors.append(err)
            return
        except SQLAlchemyError:  # the server is down or restarting: the label is retried
            retries.append(name)
            time.sleep(0.2)

threads = [threading.Thread(target=label, args=(name,)) for name in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(retries))
sys.exit(f"integrity errors: {errors[:1]}" if errors else 0)
"""


def test_twenty_concurrent_writers_store_every_label_once_across_a_crash(
    store: PreferenceStore, store_url: str, request: pytest.FixtureRequest
) -> None:
    """20 annotators x 50 labels from 20 threads; halfway, SQLite's writer process is killed
    (SIGKILL) and started again, or the PostgreSQL server is stopped at once (`-m immediate`, a
    crash) and restarted while the writers retry. Exactly 1,000 labels, none lost or doubled."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    for name in CROWD:
        store.add_annotator(name, "pw")
    crowd = [
        pair(f"What is {i} + 1?", f"{i + 1}.", f"{i + 2}.") for i in range(len(CROWD) * LABELS_EACH // 2)
    ]
    store.assign(overlap=2, seed=2, comparisons=store.add_comparisons(crowd))

    def writer() -> subprocess.Popen:
        command = [sys.executable, "-c", WRITER, store_url, ",".join(CROWD), str(LABELS_EACH)]
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    process = writer()
    deadline = time.monotonic() + 300
    while store.label_count() < 500:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the writers did not reach 500 labels"
        time.sleep(0.05)
    if store_url.startswith("sqlite"):
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert 500 <= store.label_count() < 1000  # killed halfway
        process = writer()
    else:
        server = request.getfixturevalue("postgres_server")
        server.kill()
        time.sleep(1.0)  # writers fail and retry while the server is down
        server.start()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    if not store_url.startswith("sqlite"):
        assert int(out) > 0  # the writers did see the server go down
    store.close()
    store.engine.dispose()
    reopened = PreferenceStore(store_url, create=False)
    try:
        labels = reopened.labels()
        history = [h for r in labels for h in reopened.label_history(r.assignment_id)]
        progress = {name: reopened.progress(name) for name in CROWD}
    finally:
        reopened.close()
    assert len(labels) == len(history) == len(CROWD) * LABELS_EACH == 1000
    assert len({(r.annotator, r.comparison_id) for r in labels}) == 1000
    assert Counter(r.annotator for r in labels) == dict.fromkeys(CROWD, LABELS_EACH)
    assert Counter(r.comparison_id for r in labels) == dict.fromkeys({r.comparison_id for r in labels}, 2)
    assert progress == dict.fromkeys(CROWD, (LABELS_EACH, 0))


def v01_schema():
    """The tables of align-suite 0.1's store, as it created them (one label row per assignment)."""
    from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text
    from sqlalchemy import UniqueConstraint as Unique

    def when(name: str) -> Column:
        return Column(name, DateTime(timezone=True), nullable=False)

    def ref(name: str, table: str, **kw) -> Column:
        return Column(name, Integer, ForeignKey(f"{table}.id"), nullable=kw.pop("nullable", False), **kw)

    m = MetaData()
    pk = {"primary_key": True}
    Table("annotators", m, Column("id", Integer, **pk), Column("name", String(100), unique=True, nullable=False),
          Column("password_hash", String(200), nullable=False), Column("role", String(20), nullable=False),
          when("created_at"))  # fmt: skip
    Table(
        "prompts",
        m,
        Column("id", Integer, **pk),
        Column("messages", JSON, nullable=False),
        when("created_at"),
    )
    Table("responses", m, Column("id", Integer, **pk), ref("prompt_id", "prompts", index=True),
          Column("text", Text, nullable=False), Column("model", String(200)), Column("checkpoint", String(500)),
          ref("annotator_id", "annotators", nullable=True), when("created_at"))  # fmt: skip
    Table("comparisons", m, Column("id", Integer, **pk), ref("prompt_id", "prompts", index=True),
          Column("response_ids", JSON, nullable=False), when("created_at"))  # fmt: skip
    Table("assignments", m, Column("id", Integer, **pk), ref("comparison_id", "comparisons", index=True),
          ref("annotator_id", "annotators", index=True), ref("response_a_id", "responses"),
          ref("response_b_id", "responses"), Column("status", String(10), nullable=False), when("created_at"),
          Unique("comparison_id", "annotator_id"))  # fmt: skip
    Table("labels", m, Column("id", Integer, **pk), ref("assignment_id", "assignments", unique=True),
          ref("comparison_id", "comparisons", index=True), ref("annotator_id", "annotators", index=True),
          ref("response_a_id", "responses"), ref("response_b_id", "responses"),
          *(Column(c, String(10), nullable=False) for c in ALL), ref("rewrite_response_id", "responses", nullable=True),
          Column("seconds", Float, nullable=False), when("created_at"), when("updated_at"))  # fmt: skip
    return m


def test_a_store_of_version_0_1_is_upgraded_and_keeps_its_labels(store_url: str, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from sqlalchemy import create_engine

    then, edited = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)
    old = v01_schema()
    engine = create_engine(store_url)
    old.create_all(engine)
    t = old.tables
    with engine.begin() as db:  # ids from the database's own sequences (1, 2), as 0.1 wrote them
        rows = {
            "annotators": [{"name": "ann", "password_hash": "x", "role": "annotator"}],
            "prompts": [{"messages": [{"role": "user", "content": "q?"}]}],
            "responses": [{"prompt_id": 1, "text": "first"}, {"prompt_id": 1, "text": "second"}],
            "comparisons": [{"prompt_id": 1, "response_ids": [1, 2]}],
            "assignments": [
                {
                    "comparison_id": 1,
                    "annotator_id": 1,
                    "response_a_id": 2,
                    "response_b_id": 1,
                    "status": "done",
                }
            ],
            "labels": [
                {
                    "assignment_id": 1,
                    "comparison_id": 1,
                    "annotator_id": 1,
                    "response_a_id": 2,
                    "response_b_id": 1,
                    **every("B"),
                    "seconds": 2.0,
                    "updated_at": edited,
                }
            ],
        }
        for table, values in rows.items():
            db.execute(t[table].insert(), [{"created_at": then, **v} for v in values])
    engine.dispose()
    store = PreferenceStore(store_url, create=False)
    try:
        (label,) = store.labels()
        assert (label.label_id, label.revision, label.choices, label.response_b) == (
            1,
            1,
            every("B"),
            "first",
        )
        assert store.label_history(1)[0].created_at.replace(tzinfo=timezone.utc) == edited
        store.record_label("ann", 1, every("A"))  # the old one-label-per-assignment rule is gone
        assert [h.choices["overall"] for h in store.label_history(1)] == ["B", "A"]
        assert store.next_task("ann") is None and store.comparison_count() == 1
    finally:
        store.close()
