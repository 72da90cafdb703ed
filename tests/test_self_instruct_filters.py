"""Self-instruct's filters: near-duplicates by ROUGE-L, malformed tasks, bad seed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.errors import ConfigError, InputError
from align.self_instruct import SelfInstructConfig, malformed_reason, read_seed_tasks, rouge_l, words


def test_rouge_l_is_one_for_the_same_task_and_zero_for_unrelated_ones():
    assert rouge_l(words("What is 12 + 30?"), words("what is 12 + 30")) == 1.0
    assert rouge_l(words("Name three colours."), words("Translate good morning")) == 0.0


def test_a_reworded_task_is_a_near_duplicate_at_the_papers_threshold():
    seed, reworded = (
        words("Name three colours of the rainbow."),
        words("Name three colours of a rainbow please."),
    )
    assert rouge_l(seed, reworded) >= 0.7
    assert rouge_l(seed, words("List two fruits that are yellow.")) < 0.7


def test_chinese_tasks_are_compared_character_by_character():
    assert words("计算 25 加 17") == ["计", "算", "25", "加", "17"]
    assert rouge_l(words("计算 25 加 17 等于多少？"), words("计算 25 加 17 等于几？")) >= 0.7


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        ("", "empty"),
        ("ok then", "too short"),
        ("Describe the picture below in detail.", "needs a modality the model lacks"),
        ("Sort the list. Task 5: add two numbers", "numbered list leaked"),
        ("?? what is this about", "starts with punctuation"),
        ("Say hello \ufffd to me now", "undecodable"),
        (" ".join(["word"] * 200), "too long"),
        ("Give a polite greeting for a new friend.", None),
        ("说出一年中的四个季节。", None),
    ],
)
def test_malformed_tasks_are_recognised(task, reason):
    assert malformed_reason(task, min_tokens=3, max_tokens=150) == reason


def test_a_bad_seed_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"instruction": "Add 2 and 3."}\n{"prompt": "wrong field"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"seeds.jsonl:2: .*'instruction'"):
        read_seed_tasks(path)


def test_self_instruct_rejects_a_similarity_outside_zero_to_one(tmp_path):
    with pytest.raises(ConfigError, match="max_similarity"):
        SelfInstructConfig(
            seed_tasks=Path(__file__).resolve().parent.parent / "data" / "self_instruct" / "seed_tasks.jsonl",
            model=tmp_path,
            output=tmp_path / "x.jsonl",
            max_similarity=1.5,
        )
