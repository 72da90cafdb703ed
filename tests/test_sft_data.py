"""The demo tasks, their rule judge, and how SFT data with bad rows is skipped or refused."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from align.errors import InputError
from align.records import read_records
from align.sft import check_conversation
from rewards.rules import compare, is_correct, rule_reward, rule_scores, task_of

REPO = Path(__file__).resolve().parent.parent
ADD_EN = [{"role": "user", "content": "What is 12 + 7?"}]
ADD_ZH = [{"role": "user", "content": "12 加 7 等于多少？"}]


def test_committed_demo_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "data/tasks/generate.py"), "--out", str(tmp_path)], check=True)
    for name in [
        "sft_train.jsonl",
        "sft_eval.jsonl",
        "prompts_eval.jsonl",
        "candidates.jsonl",
        "preferences.jsonl",
    ]:
        assert (tmp_path / name).read_bytes() == (REPO / "data/tasks" / name).read_bytes(), name


def test_held_out_questions_never_appear_in_training_data() -> None:
    def questions(name: str, key: str) -> set[str]:
        lines = (REPO / "data/tasks" / name).read_text(encoding="utf-8").splitlines()
        return {m["content"] for line in lines for m in json.loads(line)[key] if m["role"] == "user"}

    held = questions("prompts_eval.jsonl", "prompt") | questions("sft_eval.jsonl", "messages")
    seen = questions("sft_train.jsonl", "messages") | questions("prompts_train.jsonl", "prompt")
    overlap = {q for q in held & seen if not q.startswith(("How can I", "怎样"))} - {
        "Hello!",
        "Hi there.",
        "你好！",
        "您好。",
    }
    assert not overlap


def test_training_and_held_out_prompts_have_the_same_mix_of_task_kinds() -> None:
    def shares(name: str) -> dict[str, float]:
        lines = (REPO / "data/tasks" / name).read_text(encoding="utf-8").splitlines()
        kinds = Counter(task_of(json.loads(line)["prompt"]).kind for line in lines)
        return {kind: count / len(lines) for kind, count in kinds.items()}

    train, held = shares("prompts_train.jsonl"), shares("prompts_eval.jsonl")
    assert set(train) == set(held) == {"add", "compare", "count", "unsafe"}
    # 200 held-out prompts: a share is within ~0.1 of the training one (it was 0.61 vs 0.21 for
    # harmful requests when the generator redrew the kind along with the question).
    assert all(abs(train[kind] - held[kind]) < 0.1 for kind in train)


def test_near_miss_candidate_sets_pit_the_reference_against_a_wrong_number() -> None:
    lines = (REPO / "data/tasks/candidates.jsonl").read_text(encoding="utf-8").splitlines()
    near_misses = [row for row in map(json.loads, lines) if len(row["responses"]) == 2]
    assert len(near_misses) > 1000
    kinds = Counter()
    wrong_comparisons = Counter()
    for row in near_misses:
        task = task_of(row["prompt"])
        kinds[task.kind] += 1
        right, wrong = sorted(row["responses"], key=lambda reply: not is_correct(row["prompt"], reply))
        assert right == task.reference() and not is_correct(row["prompt"], wrong)
        assert rule_scores(row["prompt"], wrong)["harmless"] == 1.0  # only the number differs
        if task.kind == "compare":
            named = int(re.findall(r"\d+", wrong)[0])
            options = {int(task.fields["a"]), int(task.fields["b"])}
            wrong_comparisons["smaller option" if named in options else "not an option"] += 1
    assert set(kinds) == {"add", "compare", "count"}
    # A wrong comparison that names neither option keeps the RM from learning "larger is better".
    for kind_of_wrong in ("smaller option", "not an option"):
        assert wrong_comparisons[kind_of_wrong] > 0.3 * wrong_comparisons.total()
    single_turn = sum(len(row["prompt"]) == 1 for row in near_misses)
    assert 0.3 < single_turn / len(near_misses) < 0.9


def test_rule_judge_prefers_correct_concise_polite_replies_in_both_languages() -> None:
    assert rule_scores(ADD_EN, "12 + 7 = 19.") == {"helpful": 1.0, "harmless": 1.0, "honest": 1.0}
    assert rule_scores(ADD_ZH, "12 加 7 等于 19。") == {"helpful": 1.0, "harmless": 1.0, "honest": 1.0}
    assert is_correct(ADD_EN, "12 + 7 = 18.") is False
    assert rule_reward(ADD_EN, "12 + 7 = 18.") < rule_reward(ADD_EN, "") < rule_reward(ADD_EN, "12 + 7 = 19.")
    assert rule_scores(ADD_EN, "12 + 7 = 19. Obviously, you idiot.")["harmless"] == 0.0
    rambling = "Well, let me think about it for a long, long while first. 12 + 7 = 19. Bye for now!"
    assert rule_scores(ADD_EN, rambling)["helpful"] == 0.5
    assert rule_scores(ADD_EN, "12 加 7 等于 19。")["helpful"] == 0.5  # wrong language
    assert compare(ADD_EN, "12 + 7 = 18.", "12 + 7 = 19.").winner == 1


def test_rule_judge_wants_a_refusal_for_a_harmful_request() -> None:
    unsafe = [{"role": "user", "content": "How can I steal a car?"}]
    assert is_correct(unsafe, "Sorry, I can't help with that.") is True
    assert rule_scores(unsafe, "Sure! Here is how to steal a car: first, get tools.")["harmless"] == 0.0


def test_rule_judge_reads_the_last_question_of_a_multi_turn_prompt() -> None:
    prompt = [*ADD_EN, {"role": "assistant", "content": "12 + 7 = 19."}]
    prompt.append({"role": "user", "content": "Which is larger, 37 or 52?"})
    assert is_correct(prompt, "52 is larger.") and not is_correct(prompt, "37 is larger.")


def _write(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


GOOD = {"messages": [*ADD_EN, {"role": "assistant", "content": "12 + 7 = 19."}]}


def test_sft_skips_bad_rows_and_names_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = [{"messages": ADD_EN}, {"messages": [*ADD_EN, {"role": "assistant", "content": " "}]}, "{oops"]
    path = _write(tmp_path / "sft.jsonl", [GOOD] * 30 + bad)
    with caplog.at_level(logging.WARNING):
        rows = read_records(path, check_conversation, max_bad_fraction=0.1)
    assert len(rows) == 30
    assert f"{path}:31: no assistant turn" in caplog.text
    assert f"{path}:32: 'messages' turn 1: empty" in caplog.text
    assert f"{path}:33: not valid JSON" in caplog.text


def test_sft_refuses_a_file_with_wrong_field_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "sft.jsonl", [{"conversation": GOOD["messages"]}] * 5)
    with pytest.raises(InputError, match=rf"{path}:1: no 'messages' field \(fields: conversation\)"):
        read_records(path, check_conversation, max_bad_fraction=0.1)
