"""Generate the demo task data: SFT conversations, prompts, candidate replies and preferences.

    .venv/bin/python data/tasks/generate.py [--out data/tasks] [--seed 0]

The tasks are the templates of `rewards/rules.py` (addition, which is larger, counting words, and
harmful requests to refuse) in English and Chinese, single- and multi-turn, some with a system
prompt or a greeting first. About 15% of the questions (chosen by a hash of their text) are held
out: they appear only in the `*_eval` files, so accuracy there measures generalisation.

Files written (all JSONL, TRL's conversational formats):
- `sft_train.jsonl`, `sft_eval.jsonl`: `{"messages": [...]}` ending with an assistant turn.
- `prompts_train.jsonl`, `prompts_eval.jsonl`: `{"prompt": [...]}` ending with a user task (PPO, eval).
- `candidates.jsonl`: `{"prompt": [...], "responses": [...]}`, four replies of varied quality per
  prompt (correct, wrong, rambling, rude, made-up claims, wrong language, harmful compliance),
  for `align label add`; then near-miss sets of two: the reference and the same reply with a wrong
  number (sums, comparisons, counts), on conversations and on bare questions, so the reward model
  sees right against barely wrong often enough to learn it.
- `preferences.jsonl`: `{"prompt", "chosen", "rejected", "criterion", "margin"}` judged directly by
  the rules from the same candidates (what `align label export` writes after `align label judge`).

The output is a pure function of the seed; a test checks that the committed files match it.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path

from align.records import write_jsonl_files
from rewards.rules import UNSAFE_ACTS, Task, compare, make_task, task_of

WORDS = {
    "en": [
        "apple",
        "river",
        "cat",
        "green",
        "book",
        "sun",
        "music",
        "tree",
        "happy",
        "stone",
        "bird",
        "milk",
    ],
    "zh": ["苹果", "河流", "小猫", "绿色", "书本", "太阳", "音乐", "大树", "快乐", "石头", "小鸟", "牛奶"],
}
SYSTEM = {
    "en": "You are a helpful, harmless and honest assistant. Answer briefly.",
    "zh": "你是一个有帮助、无害、诚实的助手。请简短回答。",
}
GREETINGS = {
    "en": [("Hello!", "Hello! How can I help you?"), ("Hi there.", "Hi! What can I do for you?")],
    "zh": [("你好！", "你好！有什么可以帮你的吗？"), ("您好。", "您好！请问需要什么帮助？")],
}
RAMBLE = {
    "en": (
        "Well, let me think about this question very carefully and take my time, because numbers "
        "can be tricky. ",
        " I hope this long and detailed explanation was useful to you, and please ask me again anytime!",
    ),
    "zh": (
        "嗯，让我非常仔细地想一想这个问题，慢慢来，因为数字有时候很难。",
        "希望这个又长又详细的解释对你有用，随时再问我吧！",
    ),
}
RUDE_TAIL = {"en": " Obviously, you idiot.", "zh": "这都不会，笨蛋。"}
FABRICATED_HEAD = {"en": "I checked with a calculator: ", "zh": "我用计算器算过："}
COMPLY = {
    "en": "Sure! Here is how to {act}: first, make a plan and get the tools.",
    "zh": "好的！{act}的方法是：首先，做个计划并准备工具。",
}
HELD_OUT_PERCENT = 15
NEAR_MISS_SETS = 2500
"""Candidate sets of just the reference and a near miss, on training conversations. Without them a
right-vs-wrong pair is one of ~5 pairs, and the ~2M-parameter reward model ranked held-out ones at
chance (55%) while it got the style pairs right; with them, 72% of the sums (2026-11-29)."""
SINGLE_TURN_NEAR_MISS_SETS = 4000
"""The same on a bare training question. The reward model learns to check a number there, and it
carries over to conversations: on one fixed held-out split, 2,500 more multi-turn sets left it at
0.832 and 68% of the sums; 4,000 single-turn ones lifted it to 0.880 and 82% (2026-11-29). The SFT
model itself ranks 94% of those sum pairs right by log-likelihood: the knowledge is there, the
scalar head has to learn to read it."""
COMPARE_NUMBERS = range(20)
"""The numbers that comparisons choose between."""
KINDS = ["add", "add", "compare", "count", "unsafe"]
"""Task mix: addition twice as often as the others."""


def held_out(question: str) -> bool:
    """Whether a question belongs to the evaluation side (a stable hash, independent of the seed)."""
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def sample_task(rng: random.Random, lang: str, kind: str) -> tuple[str, Task]:
    """One random question of a kind and language, with its parsed task."""
    # Small numbers: a ~2M-parameter model can learn the facts (with 0-20 and 0-99 it got 11% and
    # 10% right after SFT, and its reward model could not tell a right sum from a wrong one).
    if kind == "add":
        return make_task("add", lang, a=rng.randint(0, 9), b=rng.randint(0, 9))
    if kind == "compare":
        a, b = rng.sample(COMPARE_NUMBERS, 2)
        return make_task("compare", lang, a=a, b=b)
    if kind == "count":
        words = [rng.choice(WORDS[lang]) for _ in range(rng.randint(2, 6))]
        return make_task("count", lang, words=" ".join(words))
    return make_task("unsafe", lang, act=rng.choice(UNSAFE_ACTS[lang]))


def sample_question(rng: random.Random, evaluation: bool) -> tuple[str, Task]:
    """A question on the requested side of the held-out split (harmful requests are on both).

    The kind is drawn first, so both sides keep the `KINDS` mix (redrawing the kind too would
    fill the held-out side with harmful requests, which are never redrawn).
    """
    lang = rng.choice(["en", "zh"])
    kind = rng.choice(KINDS)
    while True:
        question, task = sample_task(rng, lang, kind)
        if kind == "unsafe" or held_out(question) == evaluation:
            return question, task


def sample_conversation(rng: random.Random, evaluation: bool) -> list[dict[str, str]]:
    """A conversation of 1-3 task turns, maybe after a system prompt or a greeting; ends with a user turn."""
    messages: list[dict[str, str]] = []
    lang = rng.choice(["en", "zh"])
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": SYSTEM[lang]})
    if rng.random() < 0.2:
        hello, reply = rng.choice(GREETINGS[lang])
        messages += [{"role": "user", "content": hello}, {"role": "assistant", "content": reply}]
    turns = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    for turn in range(turns):
        question, task = sample_question(rng, evaluation)
        messages.append({"role": "user", "content": question})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": task.reference()})
    return messages


def wrong_reply(rng: random.Random, task: Task) -> str:
    """The reference reply with a wrong number: off by 1-3 (never below 0); for comparisons, the
    smaller option or, as often, any other number in range that is not an option.

    Comparisons need both. With only the smaller option as the wrong answer, the reward model
    learned "a larger number is better", and PPO against it answered "Which is larger, 1 or 0?"
    with "14 is larger." (held-out comparisons fell from 0.82 to 0.33). Non-options within 3 of the
    larger one were not enough: PPO still found "17 is larger." for 10 or 9 (0.82 to 0.65;
    both 2026-11-29).
    """
    if task.kind == "compare":
        options = {int(task.fields["a"]), int(task.fields["b"])}
        others = [n for n in COMPARE_NUMBERS if n not in options]
        answer = min(options) if rng.random() < 0.5 else rng.choice(others)
    else:
        offset = rng.choice([-3, -2, -1, 1, 2, 3])
        answer = task.answer + offset if task.answer + offset >= 0 else task.answer - offset
    return Task(task.kind, task.lang, task.fields, answer).reference()


def near_miss_set(rng: random.Random, single_turn: bool) -> dict:
    """A training conversation (or, with `single_turn`, a bare question) ending in a sum, comparison
    or count, with its reference reply and a near miss, in random order."""
    while True:
        if single_turn:
            question, task = sample_question(rng, evaluation=False)
            prompt = [{"role": "user", "content": question}]
        else:
            prompt = sample_conversation(rng, evaluation=False)
            task = task_of(prompt)
        if task.kind != "unsafe":
            break
    replies = [task.reference(), wrong_reply(rng, task)]
    rng.shuffle(replies)
    return {"prompt": prompt, "responses": replies}


def candidates(rng: random.Random, task: Task) -> list[str]:
    """Four distinct replies of varied quality, the reference among them, in random order."""
    good = task.reference()
    lang = task.lang
    if task.kind == "unsafe":
        pool = [
            COMPLY[lang].format(act=task.fields["act"]),
            good + RUDE_TAIL[lang],
            FABRICATED_HEAD[lang] + good,
        ]
    else:
        wrong = wrong_reply(rng, task)
        other = "zh" if lang == "en" else "en"
        pool = [
            wrong,
            RAMBLE[lang][0] + good + RAMBLE[lang][1],
            good + RUDE_TAIL[lang],
            FABRICATED_HEAD[lang] + good,
            Task(task.kind, other, task.fields, task.answer).reference(),
            rng.choice([wrong + RUDE_TAIL[lang], RAMBLE[lang][0] + wrong]),
        ]
    replies = [good, *rng.sample(pool, 3)]
    rng.shuffle(replies)
    return replies


def preference_rows(rng: random.Random, prompt: list[dict[str, str]], replies: list[str]) -> list[dict]:
    """Two judged pairs per prompt (TRL conversational preference format), ties skipped."""
    pairs = [(i, j) for i in range(len(replies)) for j in range(i + 1, len(replies))]
    rows = []
    for i, j in rng.sample(pairs, len(pairs)):
        verdict = compare(prompt, replies[i], replies[j])
        if verdict.winner is None:
            continue
        chosen, rejected = (replies[i], replies[j]) if verdict.winner == 0 else (replies[j], replies[i])
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "criterion": verdict.criterion,
                "margin": verdict.margin,
            }
        )
        if len(rows) == 2:
            break
    return rows


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All demo files, keyed by file name; deterministic in the seed."""
    rng = random.Random(seed)
    files: dict[str, list[dict]] = {}
    for name, count, evaluation in [("train", 2000, False), ("eval", 200, True)]:
        rows = []
        for _ in range(count):
            messages = sample_conversation(rng, evaluation)
            reply = task_of(messages).reference()
            rows.append({"messages": [*messages, {"role": "assistant", "content": reply}]})
        files[f"sft_{name}.jsonl"] = rows
    for name, count, evaluation in [("train", 2000, False), ("eval", 200, True)]:
        files[f"prompts_{name}.jsonl"] = [
            {"prompt": sample_conversation(rng, evaluation)} for _ in range(count)
        ]
    files["candidates.jsonl"], files["preferences.jsonl"] = [], []
    for _ in range(2000):
        prompt = sample_conversation(rng, evaluation=False)
        replies = candidates(rng, task_of(prompt))
        files["candidates.jsonl"].append({"prompt": prompt, "responses": replies})
        files["preferences.jsonl"] += preference_rows(rng, prompt, replies)
    for single_turn in [False] * NEAR_MISS_SETS + [True] * SINGLE_TURN_NEAR_MISS_SETS:
        near_miss = near_miss_set(rng, single_turn)
        files["candidates.jsonl"].append(near_miss)
        files["preferences.jsonl"] += preference_rows(rng, near_miss["prompt"], near_miss["responses"])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = generate(args.seed)
    write_jsonl_files(files, args.out)
    print(" ".join(f"{name}={len(rows)}" for name, rows in files.items()))


if __name__ == "__main__":
    main()
