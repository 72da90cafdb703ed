"""The instruction-following constraints: each checker on hand-written replies, and the prompt files."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rewards.constraints import (
    CONSTRAINT_TYPES,
    HELD_OUT_TYPES,
    TRAINED_TYPES,
    compatible,
    constraint_results,
    constraint_reward,
    constraints_of,
    follows_all,
    make_constraint,
    parse_constraints,
    sample_constraint,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data/tasks/instructions"
FILES = ["train.jsonl", "eval.jsonl", "eval_unseen.jsonl"]

# (kind, lang, params, response, follows): hand-written, one behaviour per line.
CASES = [
    ("max_words", "en", {"n": 5}, "I like green apples.", True),
    ("max_words", "en", {"n": 5}, "I like green apples very much.", False),
    ("max_words", "en", {"n": 5}, "  - I like — green apples!\n", True),  # "-" and "—" are not words
    ("max_words", "zh", {"n": 5}, "我爱吃苹果。", True),
    ("max_words", "zh", {"n": 5}, "我非常爱吃苹果。", False),
    ("max_words", "zh", {"n": 5}, "我爱吃 apple pie", True),  # 3 characters + 2 words
    ("max_words", "zh", {"n": 5}, "我爱吃 apple pie too", False),
    ("min_words", "en", {"n": 5}, "I like green apples very much.", True),
    ("min_words", "en", {"n": 5}, "I like green apples.", False),
    ("min_words", "zh", {"n": 5}, "我非常爱吃苹果。", True),
    ("min_words", "zh", {"n": 5}, "我爱吃。", False),
    ("max_sentences", "en", {"n": 2}, "I like tea. It is warm!", True),
    ("max_sentences", "en", {"n": 2}, "Pi is about 3.14 today. Really?", True),  # no break inside a number
    ("max_sentences", "en", {"n": 2}, "I like tea. It is warm! Do you?", False),
    ("max_sentences", "en", {"n": 2}, "Hello\nI am here\nBye", False),  # a line break ends a sentence
    ("max_sentences", "zh", {"n": 2}, "我喜欢茶，因为茶很暖和。你呢？", True),
    ("max_sentences", "zh", {"n": 2}, "我喜欢茶。茶很暖和！你呢？", False),
    ("include_keyword", "en", {"word": "garden"}, "We sat in the Garden all day.", True),
    ("include_keyword", "en", {"word": "garden"}, "We sat in the yard all day.", False),
    ("include_keyword", "en", {"word": "garden"}, "We sat in the gardens all day.", False),  # the word itself
    ("include_keyword", "zh", {"word": "花园"}, "我们在花园里玩。", True),
    ("include_keyword", "zh", {"word": "花园"}, "我们在公园里玩。", False),
    ("forbidden_word", "en", {"word": "very"}, "It was a calm day.", True),
    ("forbidden_word", "en", {"word": "very"}, "Every day was calm.", True),  # only the whole word
    ("forbidden_word", "en", {"word": "very"}, "It was Very calm.", False),
    ("forbidden_word", "zh", {"word": "非常"}, "今天天气很好。", True),
    ("forbidden_word", "zh", {"word": "非常"}, "今天天气非常好。", False),
    ("num_paragraphs", "en", {"n": 2}, "First part.\n\nSecond part.", True),
    ("num_paragraphs", "en", {"n": 2}, "\n\nFirst part.\n  \n\nSecond part.\n\n", True),
    ("num_paragraphs", "en", {"n": 2}, "First part.\nSecond part.", False),
    ("num_paragraphs", "en", {"n": 2}, "First.\n\nSecond.\n\nThird.", False),
    ("num_paragraphs", "zh", {"n": 2}, "第一段。\n\n第二段。", True),
    ("num_paragraphs", "zh", {"n": 2}, "第一段。第二段。", False),
    ("num_bullets", "en", {"n": 3}, "Tips:\n- Sleep early.\n* Drink water.\n- Walk daily.", True),
    ("num_bullets", "en", {"n": 3}, "- Sleep early.\n- Drink water.", False),
    ("num_bullets", "en", {"n": 3}, "-Sleep early.\n-Drink water.\n-Walk daily.", False),
    ("num_bullets", "en", {"n": 3}, "1. Sleep early.\n2. Drink water.\n3. Walk daily.", False),
    ("num_bullets", "zh", {"n": 2}, "- 早睡。\n- 多喝水。", True),
    ("num_bullets", "zh", {"n": 2}, "早睡，多喝水。", False),
    ("title", "en", {}, "<<A Rainy Day>>\nIt rained all morning.", True),
    ("title", "en", {}, "A Rainy Day\nIt rained all morning.", False),
    ("title", "en", {}, "<< >> It rained all morning.", False),
    ("title", "zh", {}, "<<雨天>>\n下了一上午的雨。", True),
    ("title", "zh", {}, "《雨天》\n下了一上午的雨。", False),
    ("start_phrase", "en", {"phrase": "Dear friend"}, "  Dear friend, I miss you.", True),
    ("start_phrase", "en", {"phrase": "Dear friend"}, "Hello. Dear friend, I miss you.", False),
    ("start_phrase", "en", {"phrase": "Dear friend"}, "dear friend, I miss you.", False),
    ("start_phrase", "zh", {"phrase": "亲爱的朋友"}, "亲爱的朋友，你好！", True),
    ("start_phrase", "zh", {"phrase": "亲爱的朋友"}, "你好，亲爱的朋友！", False),
    ("end_phrase", "en", {"phrase": "Have a nice day."}, "Thanks for the tea. Have a nice day.  \n", True),
    ("end_phrase", "en", {"phrase": "Have a nice day."}, "Have a nice day. Bye.", False),
    ("end_phrase", "zh", {"phrase": "谢谢阅读。"}, "这是我的故事。谢谢阅读。\n", True),
    ("end_phrase", "zh", {"phrase": "谢谢阅读。"}, "谢谢阅读。再见。", False),
    ("lowercase", "en", {}, "i like green apples, 3 of them.", True),
    ("lowercase", "en", {}, "I like green apples.", False),
    ("lowercase", "en", {}, "123 456", False),  # no letters at all
    ("uppercase", "en", {}, "I LIKE GREEN APPLES!", True),
    ("uppercase", "en", {}, "I LIKE green APPLES!", False),
    ("no_commas", "en", {}, "I like tea and cake.", True),
    ("no_commas", "en", {}, "I like tea, and cake.", False),
    ("no_commas", "zh", {}, "我喜欢茶和蛋糕。", True),
    ("no_commas", "zh", {}, "我喜欢茶，也喜欢蛋糕。", False),
    ("json_keys", "en", {"keys": ["name", "reason"]}, '{"name": "Tom", "reason": "He is kind."}', True),
    (
        "json_keys",
        "en",
        {"keys": ["name", "reason"]},
        '```json\n{"reason": "kind", "name": "Tom"}\n```\n',
        True,
    ),
    ("json_keys", "en", {"keys": ["name", "reason"]}, '{"name": "Tom"}', False),
    ("json_keys", "en", {"keys": ["name", "reason"]}, '{"name": "Tom", "reason": "kind", "age": 3}', False),
    ("json_keys", "en", {"keys": ["name", "reason"]}, 'Here it is: {"name": "Tom", "reason": "kind"}', False),
    ("json_keys", "en", {"keys": ["name", "reason"]}, '["name", "reason"]', False),
    ("json_keys", "zh", {"keys": ["name", "reason"]}, '{"name": "小明", "reason": "他很善良"}', True),
    ("json_keys", "zh", {"keys": ["name", "reason"]}, '{"名字": "小明", "原因": "他很善良"}', False),
    ("response_language", "en", {}, "我喜欢春天。", True),
    ("response_language", "en", {}, "春天很美 OK", True),  # 4 of 6 letters are CJK
    ("response_language", "en", {}, "我喜欢 spring", False),  # 3 of 9
    ("response_language", "en", {}, "I like spring.", False),
    ("response_language", "en", {}, "2024", False),  # no letters at all
    ("response_language", "zh", {}, "I like spring.", True),
    ("response_language", "zh", {}, "I like 春天.", False),
    ("response_language", "zh", {}, "我喜欢春天。", False),
    ("quotation", "en", {}, '  "I like spring."\n', True),
    ("quotation", "en", {}, 'I like "spring".', False),
    ("quotation", "zh", {}, "“我喜欢春天。”", True),
    ("quotation", "zh", {}, '"我喜欢春天。"', True),
    ("quotation", "zh", {}, "我喜欢“春天”。", False),
    ("postscript", "en", {}, "See you soon.\n\nP.S. Bring a hat.\n", True),
    ("postscript", "en", {}, "P.S. Bring a hat.\nSee you soon.", False),
    ("postscript", "en", {}, "See you soon. PS bring a hat.", False),
    ("postscript", "zh", {}, "明天见。\n附注：记得带伞。", True),
    ("postscript", "zh", {}, "明天见。附注：记得带伞。", False),
    ("placeholders", "en", {"n": 2}, "Dear [name], meet me at [place].", True),
    ("placeholders", "en", {"n": 2}, "Dear [name], meet me soon.", False),
    ("placeholders", "en", {"n": 2}, "Dear [ ], meet me at [].", False),
    ("placeholders", "zh", {"n": 1}, "请把信寄到[地址]。", True),
    ("placeholders", "zh", {"n": 1}, "请把信寄到我家。", False),
]


@pytest.mark.parametrize(
    "kind, lang, params, response, follows",
    CASES,
    ids=[f"{kind}-{lang}-{'pass' if ok else 'fail'}-{i}" for i, (kind, lang, _, _, ok) in enumerate(CASES)],
)
def test_checker_on_a_hand_written_response(
    kind: str, lang: str, params: dict, response: str, follows: bool
) -> None:
    assert make_constraint(kind, lang, params).check(response) is follows


def test_every_type_and_language_has_a_passing_and_a_failing_example() -> None:
    covered = {(kind, lang, ok) for kind, lang, _, _, ok in CASES}
    for kind, ctype in CONSTRAINT_TYPES.items():
        for lang in ctype.templates:
            assert {(kind, lang, True), (kind, lang, False)} <= covered, (kind, lang)


def test_a_reply_without_letters_or_digits_follows_no_constraint() -> None:
    rng = random.Random(0)
    for kind, ctype in CONSTRAINT_TYPES.items():
        for lang in ctype.templates:
            constraint = sample_constraint(rng, kind, lang)
            assert not constraint.check(""), kind
            assert not constraint.check(" \n- ,.\n"), kind


def test_there_are_at_least_fourteen_types_and_two_are_held_out() -> None:
    assert len(CONSTRAINT_TYPES) >= 14
    assert set(HELD_OUT_TYPES) <= set(CONSTRAINT_TYPES)
    assert set(TRAINED_TYPES) == set(CONSTRAINT_TYPES) - set(HELD_OUT_TYPES)


def test_case_constraints_have_no_chinese_template() -> None:
    with pytest.raises(ValueError, match="no 'zh' template; allowed: \\['en'\\]"):
        make_constraint("lowercase", "zh", {})
    with pytest.raises(ValueError, match="unknown constraint kind 'shout'"):
        make_constraint("shout", "en", {})


def test_every_type_and_compatible_pair_parses_back_from_a_prompt() -> None:
    rng = random.Random(0)
    for lang in ("en", "zh"):
        samples = [
            sample_constraint(rng, k, lang) for k, t in CONSTRAINT_TYPES.items() if lang in t.templates
        ]
        for a in samples:
            assert parse_constraints(f"Describe a rainy morning. {a.instruction()}") == [a]
            for b in samples:
                if compatible(a, b):
                    assert parse_constraints(f"描述春天。 {a.instruction()} {b.instruction()}") == [a, b]


def test_compatible_rejects_contradictions() -> None:
    def c(kind: str, **params: object):
        return make_constraint(kind, "en", params)

    assert not compatible(c("lowercase"), c("uppercase"))
    assert not compatible(c("lowercase"), c("start_phrase", phrase="Dear friend"))
    assert compatible(c("lowercase"), c("include_keyword", word="garden"))
    assert not compatible(c("max_words", n=30), c("min_words", n=20))
    assert compatible(c("min_words", n=20), c("max_words", n=40))
    assert not compatible(c("json_keys", keys=["name", "tip"]), c("num_bullets", n=3))
    assert not compatible(c("end_phrase", phrase="Have a nice day."), c("forbidden_word", word="nice"))
    assert not compatible(c("no_commas"), c("start_phrase", phrase="Well, then"))
    assert not compatible(c("max_sentences", n=2), c("num_paragraphs", n=3))
    assert not compatible(c("title"), c("title"))
    assert not compatible(c("title"), make_constraint("title", "zh", {}))


def test_follows_all_and_reward_on_a_two_constraint_prompt() -> None:
    prompt = "Describe a rainy morning. Answer with at most 8 words. Do not use any commas in your response."
    assert follows_all(prompt, "Rain taps softly on the window.") is True
    assert constraint_reward(prompt, "Rain taps softly on the window.") == 1.0
    # 7 words, but commas.
    assert follows_all(prompt, "Rain, soft and grey, taps the window.") is False
    assert constraint_reward(prompt, "Rain, soft and grey, taps the window.") == 0.5
    # 11 words, and commas.
    assert constraint_reward(prompt, "Rain, soft and grey, taps the window all morning long today.") == 0.0
    results = constraint_results(prompt, "Rain, soft and grey, taps the window.")
    assert [(c.kind, ok) for c, ok in results] == [("max_words", True), ("no_commas", False)]


def test_reward_in_chinese_reads_the_last_user_turn() -> None:
    messages = [
        {"role": "user", "content": "描述春天。 回答不少于100个字。"},
        {"role": "assistant", "content": "春天来了。"},
        {"role": "user", "content": "描述一个下雨的早晨。 回答不超过10个字。 回答中必须包含“窗户”这个词。"},
    ]
    assert [c.kind for c in constraints_of(messages)] == ["max_words", "include_keyword"]
    assert constraint_reward(messages, "雨打在窗户上。") == 1.0  # 6 characters
    assert constraint_reward(messages, "雨轻轻地打在玻璃窗户上发出声音。") == 0.5  # 15 characters
    assert follows_all(messages, "雨轻轻地打在玻璃窗户上发出声音。") is False


def test_a_prompt_without_constraints_has_no_reward() -> None:
    assert constraints_of("Describe a rainy morning.") == []
    assert follows_all("Describe a rainy morning.", "It rained.") is None
    assert constraint_reward([{"role": "user", "content": "介绍一下你最喜欢的动物。"}], "猫。") is None


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", FILES)
def test_every_committed_prompt_parses_back_to_its_constraints(name: str) -> None:
    for row in rows(name):
        parsed = constraints_of(row["prompt"])
        assert [c.as_dict() for c in parsed] == row["constraints"], row["prompt"]
        assert {c.lang for c in parsed} == {row["lang"]}
        assert len(parsed) == 1 or compatible(*parsed)


def test_held_out_types_appear_only_in_the_unseen_file() -> None:
    def kinds(row: dict) -> set[str]:
        return {c["kind"] for c in row["constraints"]}

    assert not any(kinds(row) & set(HELD_OUT_TYPES) for row in rows("train.jsonl") + rows("eval.jsonl"))
    assert all(kinds(row) & set(HELD_OUT_TYPES) for row in rows("eval_unseen.jsonl"))
    assert [len(rows(name)) for name in FILES] == [2000, 200, 100]


def test_eval_files_share_no_base_task_with_train() -> None:
    def base_tasks(name: str) -> set[str]:
        tasks = set()
        for row in rows(name):
            text = row["prompt"][-1]["content"]
            for constraint in constraints_of(row["prompt"]):
                text = text.replace(" " + constraint.instruction(), "")
            tasks.add(text)
        return tasks

    train = base_tasks("train.jsonl")
    held = base_tasks("eval.jsonl") | base_tasks("eval_unseen.jsonl")
    assert len(train) > 80 and len(held) > 10
    assert not train & held


def test_training_types_are_drawn_evenly_and_answering_in_the_other_language_rarely() -> None:
    train = rows("train.jsonl")
    counts = Counter(c["kind"] for row in train for c in row["constraints"])
    even = [counts[k] for k in TRAINED_TYPES if k != "response_language"]
    assert max(even) <= 1.1 * min(even)
    assert counts["response_language"] <= 0.05 * len(train)
    assert 0.6 < sum(row["lang"] == "en" for row in train) / len(train) < 0.72
    assert 0.35 < sum(len(row["constraints"]) == 2 for row in train) / len(train) < 0.45


def test_committed_prompts_are_what_the_generator_writes(tmp_path: Path) -> None:
    generator = REPO / "data/tasks/instructions.py"
    subprocess.run([sys.executable, str(generator), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
