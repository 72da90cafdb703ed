"""The preference store, agreement, the judge and import/export, on real SQLite files."""

from __future__ import annotations

import json
import math
import sqlite3
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


@pytest.fixture
def store(tmp_path: Path):
    s = PreferenceStore(f"sqlite:///{tmp_path / 'labels.sqlite'}")
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


def test_passwords_are_stored_hashed_and_checked(store: PreferenceStore, tmp_path: Path) -> None:
    store.add_annotator("ann", "s3cret")
    assert store.check_password("ann", "s3cret")
    assert not store.check_password("ann", "S3cret")
    assert not store.check_password("nobody", "s3cret")
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
    store: PreferenceStore, tmp_path: Path
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
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    assert main(["label", "export", "--store", url, "--output", str(output)]) == 0
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
    store: PreferenceStore, tmp_path: Path
) -> None:
    """A correct but rude reply: more helpful, less harmless. The per-criterion verdicts disagree;
    the overall export has one row per pair, tagged with the criterion that decided it."""
    store.add_annotator("judge", "pw")
    store.add_comparisons([pair("What is 2 + 3?", "first: 5, idiot", "second: 6")])
    store.assign()
    task = store.next_task("judge")
    choices = {"helpful": "first", "harmless": "second", "honest": "first", "overall": "first"}
    store.record_label("judge", task.assignment_id, {c: shown(task, v) for c, v in choices.items()}, 1.0)
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
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


def test_label_add_imports_jsonl_creates_annotators_and_assigns(tmp_path: Path) -> None:
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
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
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


def test_the_judge_labels_through_the_store_and_prefers_the_correct_answer(tmp_path: Path) -> None:
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
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    assert main(["label", "add", "--store", url, "--jsonl", str(data)]) == 0
    assert main(["label", "judge", "--store", url]) == 0
    assert main(["label", "judge", "--store", url]) == 0  # nothing left: no duplicates
    store = PreferenceStore(url)
    labels = store.labels()
    store.close()
    assert len(labels) == 3 and {r.annotator for r in labels} == {"rule-judge"}
    winners = {r.response_a if r.choices["overall"] == "A" else r.response_b for r in labels}
    assert winners == {"2 + 3 = 5.", "9 is larger.", "Sorry, I can't help with that."}


def test_label_stats_prints_agreement_per_criterion(store: PreferenceStore, tmp_path: Path, capsys) -> None:
    store.add_annotator("x", "pw")
    store.add_annotator("y", "pw")
    store.add_comparisons([pair(f"q{i}?", "first", "second") for i in range(4)])
    store.assign(overlap=2)
    label_all(store, "x", ["first", "second", "first", "tie"])
    label_all(store, "y", ["first", "second", "second", "tie"])
    assert main(["label", "stats", "--store", f"sqlite:///{tmp_path / 'labels.sqlite'}"]) == 0
    out = capsys.readouterr().out
    assert "| overall |" in out and "| x / y |" in out and "(4)" in out
    assert "Labels per annotator: x 4, y 4" in out
