"""Generate the instruction-following prompts: everyday writing tasks with verifiable constraints.

    .venv/bin/python data/tasks/instructions.py [--out data/tasks/instructions] [--seed 0]

Each prompt is one of the short writing tasks below ("Describe a rainy morning.", "写一段关于春天的
短文。") followed by the instruction sentences of one constraint (60%) or two compatible ones (40%)
from `rewards/constraints.py` ("Answer with at most 40 words.", "回答中不要使用任何逗号。"). About
two thirds are English, one third Chinese. Trained types are drawn with roughly equal frequency;
`response_language` (answer in the other language, hard for a small model) only in ~4% of prompts.
About 15% of the base tasks (chosen by a hash of their text; 8 of 60 in each language) are held
out: they appear only in the eval files, so held-out prompts are new tasks, not just new
combinations of constraints. No prompt repeats within a file.

Files written (JSONL, TRL's conversational prompt format plus what the judge reads back):
- `train.jsonl` (2,000 rows), `eval.jsonl` (200 rows): trained types only.
- `eval_unseen.jsonl` (100 rows): every prompt has one of `HELD_OUT_TYPES` (never in training),
  to measure transfer to new kinds of constraints. Two thirds also have a trained type: the held-out
  tasks make only 32 distinct one-constraint prompts (16 tasks x 2 types).
Each row is `{"prompt": [{"role": "user", "content": ...}], "lang": "en"|"zh", "constraints":
[{"kind": ..., "params": {...}}]}`; `constraints_of(row["prompt"])` reads the same list back.

The output is a pure function of the seed; a test checks that the committed files match it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
from collections import Counter
from pathlib import Path

from align.records import write_jsonl_files
from rewards.constraints import (
    CONSTRAINT_TYPES,
    HELD_OUT_TYPES,
    TRAINED_TYPES,
    Constraint,
    Lang,
    compatible,
    constraints_of,
    sample_constraint,
)

BASE_TASKS: dict[Lang, list[str]] = {
    "en": [
        "Write a short note to a friend about a picnic.",
        "Describe a rainy morning.",
        "Give some tips for learning to cook.",
        "Describe your favourite season.",
        "Write a short story about a lost cat.",
        "Explain why sleep is important.",
        "Describe a walk in the park.",
        "Write a thank-you message to a teacher.",
        "Tell me about a hobby you enjoy.",
        "Describe the view from a window.",
        "Write a short invitation to a birthday party.",
        "Explain how to make a cup of tea.",
        "Describe a busy market.",
        "Give some advice to a new student.",
        "Write a short review of a book you like.",
        "Describe a sunny day at the beach.",
        "Explain why people enjoy music.",
        "Write a message to a neighbour about a lost umbrella.",
        "Describe your ideal weekend.",
        "Give some tips for staying healthy.",
        "Write a short story about a friendly robot.",
        "Describe a quiet evening at home.",
        "Explain how to plant a tree.",
        "Write an apology to a friend for being late.",
        "Describe a city at night.",
        "Give some reasons to read more books.",
        "Describe your favourite meal.",
        "Write a short welcome message for a new neighbour.",
        "Explain why exercise is good for you.",
        "Describe a snowy winter day.",
        "Write a short postcard from a holiday by the sea.",
        "Give some tips for saving money.",
        "Describe an old tree in a garden.",
        "Write a short speech for a school sports day.",
        "Explain how to take care of a houseplant.",
        "Describe the sounds of a forest.",
        "Write a note reminding a friend to return a book.",
        "Give some advice for a first job interview.",
        "Describe a train journey through the countryside.",
        "Write a short story about a brave little mouse.",
        "Explain why friendship matters.",
        "Describe a family dinner.",
        "Give some tips for a calm morning routine.",
        "Write a short message to cheer up a sad friend.",
        "Describe a visit to a museum.",
        "Explain how to ride a bicycle.",
        "Describe the smell of fresh bread.",
        "Write a short thank-you note for a gift.",
        "Give some ideas for a rainy afternoon.",
        "Describe a river in spring.",
        "Write a short story about a kite that flew away.",
        "Explain why recycling is useful.",
        "Describe your favourite place in your town.",
        "Give some advice for learning a new language.",
        "Write a short note to a colleague about a meeting.",
        "Describe a cup of hot chocolate on a cold day.",
        "Explain how to pack for a short trip.",
        "Describe the first day of school.",
        "Write a short poem about the moon.",
        "Give some tips for keeping a room tidy.",
    ],
    "zh": [
        "写一段关于春天的短文。",
        "介绍一下你最喜欢的动物。",
        "描述一个下雨的早晨。",
        "给朋友写一张关于野餐的便条。",
        "谈谈学习做饭的一些建议。",
        "描述你理想中的周末。",
        "写一个关于迷路小猫的小故事。",
        "解释一下为什么睡眠很重要。",
        "描述一次在公园里的散步。",
        "给老师写一段感谢的话。",
        "介绍一个你喜欢的爱好。",
        "描述从窗户看到的风景。",
        "写一份生日聚会的邀请。",
        "说说怎样泡一杯茶。",
        "描述一个热闹的市场。",
        "给新同学一些建议。",
        "介绍一本你喜欢的书。",
        "描述海边晴朗的一天。",
        "谈谈人们为什么喜欢音乐。",
        "描述家里安静的夜晚。",
        "说说怎样种一棵树。",
        "为迟到的事向朋友道歉。",
        "描述夜晚的城市。",
        "谈谈多读书的好处。",
        "介绍你最喜欢的一道菜。",
        "给新邻居写一段欢迎的话。",
        "说说运动对身体的好处。",
        "描述一个下雪的冬日。",
        "在海边度假时给家人写一张明信片。",
        "谈谈怎样节约用钱。",
        "描述花园里的一棵老树。",
        "为学校运动会写一段简短的发言。",
        "说说怎样照顾一盆植物。",
        "描述森林里的声音。",
        "谈谈第一次面试要注意什么。",
        "描述一次乘火车穿过乡村的旅行。",
        "写一个关于勇敢小老鼠的故事。",
        "谈谈友谊为什么重要。",
        "描述一次家庭晚餐。",
        "谈谈怎样开始一个轻松的早晨。",
        "写一段话安慰一个难过的朋友。",
        "描述一次参观博物馆的经历。",
        "说说怎样学会骑自行车。",
        "描述新鲜面包的香味。",
        "为收到的礼物写一段感谢的话。",
        "谈谈下雨的下午可以做些什么。",
        "描述春天的小河。",
        "写一个关于风筝飞走的故事。",
        "谈谈垃圾分类的好处。",
        "介绍你家乡最美的地方。",
        "谈谈学习一门外语的方法。",
        "给同事写一张关于开会的便条。",
        "描述寒冷冬天里的一杯热巧克力。",
        "说说短途旅行要带些什么。",
        "描述开学的第一天。",
        "写一首关于月亮的小诗。",
        "谈谈怎样保持房间整洁。",
        "介绍一下你的好朋友。",
        "描述秋天的树叶。",
        "说说你小时候最喜欢的游戏。",
    ],
}
HELD_OUT_PERCENT = 15
EN_SHARE = 2 / 3
TWO_CONSTRAINTS_SHARE = 0.4
RESPONSE_LANGUAGE_SHARE = 0.04
"""Answering in the other language is hard for a ~135M model; a few prompts keep it in the mix."""
BALANCE_SLACK = 3
"""A type is drawn among those used at most this many times more than the least used one, so
every type ends up with about the same count whatever its conflicts and languages."""
MAX_REDRAWS = 50
"""Draws of a one-constraint prompt that repeat an earlier one before a row takes two instead."""
FILES = [
    ("train.jsonl", 2000, False, False),
    ("eval.jsonl", 200, True, False),
    ("eval_unseen.jsonl", 100, True, True),
]
"""(name, rows, held-out base tasks, held-out constraint types)."""


def held_out(task: str) -> bool:
    """Whether a base task belongs to the evaluation side (a stable hash, independent of the seed)."""
    return int(hashlib.sha256(task.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def balanced_choice(rng: random.Random, kinds: list[str], counts: Counter[str]) -> str:
    """One of the kinds, among the least used so far (within `BALANCE_SLACK`)."""
    least = min(counts[k] for k in kinds)
    return rng.choice([k for k in kinds if counts[k] <= least + BALANCE_SLACK])


def sample_constraints(
    rng: random.Random, lang: Lang, unseen: bool, two: bool, counts: Counter[str]
) -> list[Constraint]:
    """One constraint, or with `two` two compatible ones; with `unseen`, the first is of a held-out type.

    `counts` is how often each type, and under "rows" a prompt, was used so far in the file.
    """
    trained = [k for k in TRAINED_TYPES if k != "response_language" and lang in CONSTRAINT_TYPES[k].templates]
    if unseen:
        first_kind = balanced_choice(rng, list(HELD_OUT_TYPES), counts)
    elif (
        rng.random() < RESPONSE_LANGUAGE_SHARE
        and counts["response_language"] < RESPONSE_LANGUAGE_SHARE * counts["rows"]
    ):
        first_kind = "response_language"
    else:
        first_kind = balanced_choice(rng, trained, counts)
    first = sample_constraint(rng, first_kind, lang)
    if not two:
        return [first]
    options = [
        k
        for k in trained
        if k != first_kind
        and k not in first.type.conflicts
        and first_kind not in CONSTRAINT_TYPES[k].conflicts
    ]
    while options:
        kind = balanced_choice(rng, options, counts)
        # Parameters may clash (max_words below min_words...): redraw them, then drop the kind.
        for _ in range(10):
            second = sample_constraint(rng, kind, lang)
            if compatible(first, second):
                pair = [first, second]
                rng.shuffle(pair)
                return pair
        options.remove(kind)
    return [first]


def sample_row(
    rng: random.Random, tasks: dict[Lang, list[str]], unseen: bool, two: bool, counts: Counter[str]
) -> dict:
    """One prompt row; refuses a prompt whose text does not parse back to its constraints."""
    lang: Lang = "en" if rng.random() < EN_SHARE else "zh"
    task = rng.choice(tasks[lang])
    constraints = sample_constraints(rng, lang, unseen, two, counts)
    prompt = [{"role": "user", "content": " ".join([task] + [c.instruction() for c in constraints])}]
    if constraints_of(prompt) != constraints:
        raise ValueError(f"prompt does not parse back to its constraints: {prompt[0]['content']!r}")
    return {"prompt": prompt, "lang": lang, "constraints": [c.as_dict() for c in constraints]}


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All three files, keyed by file name; deterministic in the seed. No prompt repeats in a file."""
    rng = random.Random(seed)
    files = {}
    for name, count, evaluation, unseen in FILES:
        tasks = {lang: [t for t in BASE_TASKS[lang] if held_out(t) == evaluation] for lang in BASE_TASKS}
        counts: Counter[str] = Counter()
        rows, seen = [], set()
        while len(rows) < count:
            two = rng.random() < TWO_CONSTRAINTS_SHARE
            # A repeated prompt adds nothing to train on or to measure: draw again. The unseen file
            # runs out of one-constraint prompts (16 tasks x 2 types), so it then takes two.
            for attempt in itertools.count():
                row = sample_row(rng, tasks, unseen, two or attempt >= MAX_REDRAWS, counts)
                if row["prompt"][0]["content"] not in seen:
                    break
            seen.add(row["prompt"][0]["content"])
            rows.append(row)
            counts.update(["rows"] + [c["kind"] for c in row["constraints"]])
        files[name] = rows
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "instructions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = generate(args.seed)
    write_jsonl_files(files, args.out)
    print(" ".join(f"{name}={len(rows)}" for name, rows in files.items()))


if __name__ == "__main__":
    main()
