"""Which preference rows the reward model trains on, and how bad ones are reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from align.errors import InputError
from align.records import read_records
from rewards.train import check_preference, contradicting_rows, normalise

PROMPT = [{"role": "user", "content": "What is 12 + 7?"}]
GOOD = {
    "prompt": PROMPT,
    "chosen": [{"role": "assistant", "content": "12 + 7 = 19."}],
    "rejected": [{"role": "assistant", "content": "12 + 7 = 18."}],
    "criterion": "helpful",
    "margin": 0.5,
}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bad_pairs_are_skipped_with_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        dict(GOOD, rejected=GOOD["chosen"]),
        dict(GOOD, chosen=""),
        dict(GOOD, criterion="funny"),
        dict(GOOD, margin=-1),
    ]
    path = _write(tmp_path / "prefs.jsonl", [GOOD] * 40 + bad)
    with caplog.at_level(logging.WARNING):
        rows = read_records(path, check_preference, max_bad_fraction=0.1)
    assert len(rows) == 40
    assert f"{path}:41: chosen == rejected" in caplog.text
    assert f"{path}:42: 'chosen' is empty" in caplog.text
    assert f"{path}:43: criterion 'funny'" in caplog.text
    assert f"{path}:44: margin -1" in caplog.text


def test_a_file_with_wrong_field_names_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "prefs.jsonl", [{"question": "q", "good": "a", "bad": "b"}] * 3)
    with pytest.raises(InputError, match=rf"{path}:1: missing field\(s\) prompt, chosen, rejected"):
        read_records(path, check_preference, max_bad_fraction=0.05)


def test_plain_text_pairs_become_one_user_and_one_assistant_turn() -> None:
    row = {"prompt": "What is 12 + 7?", "chosen": "12 + 7 = 19.", "rejected": "20"}
    assert check_preference(row) is None
    assert normalise(row) == {
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": "12 + 7 = 19."}],
        "rejected": [{"role": "assistant", "content": "20"}],
        "margin": 0.0,
        "criterion": "overall",
    }


def test_rows_that_rank_a_pair_both_ways_are_counted() -> None:
    swapped = dict(GOOD, chosen=GOOD["rejected"], rejected=GOOD["chosen"], criterion="harmless")
    other = dict(GOOD, prompt=[{"role": "user", "content": "What is 1 + 1?"}])
    rows = [normalise(r) for r in (GOOD, GOOD, swapped, other)]
    assert contradicting_rows(rows) == 3  # both copies of GOOD and the swapped row
    assert contradicting_rows([normalise(GOOD), normalise(other)]) == 0


def test_copies_of_a_pair_are_never_split_between_training_and_held_out(tmp_path: Path) -> None:
    from rewards.reward_config import RewardStageConfig
    from rewards.train import pair_key, preference_splits

    rows = []
    for n in range(40):
        prompt = [{"role": "user", "content": f"What is {n} + 1?"}]
        right, wrong = f"{n} + 1 = {n + 1}.", f"{n} + 1 = {n + 2}."
        pair = {"prompt": prompt, "chosen": right, "rejected": wrong}
        # The same pair exported twice more (as per-criterion rows would be), once the other way round.
        rows += [pair, dict(pair, criterion="helpful"), dict(pair, chosen=wrong, rejected=right)]
    path = _write(tmp_path / "prefs.jsonl", rows)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    config = RewardStageConfig(model=model, train_file=path, output_dir=tmp_path / "rm", eval_fraction=0.25)
    train, held = preference_splits(config)
    assert len(held) >= 30 and len(train) + len(held) == 120
    assert not {pair_key(r) for r in train} & {pair_key(r) for r in held}
