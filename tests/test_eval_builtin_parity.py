"""TriviaQA and NQ are scored as lm-eval's own built-in tasks score them.

lm-eval's `triviaqa` and `nq_open` task YAMLs are loaded from the installed package with only their
dataset swapped for local files, and run beside the suite's tasks on the same questions, with
lm-eval's own `hf` model on the tiny checkpoint. The gold answers are the model's own greedy replies
(which begin with a space, as real models' do) for half the questions: the tasks' prompts, filters
and metrics must give the same per-item results and score as lm-eval's, and the score worked out
by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from align.eval.benchmarks import render_tasks

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


def builtin_task(name: str, yaml_path: str, data_file: Path, out_dir: Path) -> str:
    """lm-eval's own task YAML, with its dataset swapped for `data_file` (everything else as is)."""
    import lm_eval

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / yaml_path).read_text())
    config.pop("dataset_name", None)
    config.pop("training_split", None)
    config.update(
        task=f"builtin_{name}",
        dataset_path="json",
        dataset_kwargs={"data_files": {config["validation_split"]: str(data_file)}},
    )
    (out_dir / f"builtin_{name}.yaml").write_text(yaml.safe_dump(config))
    return f"builtin_{name}"


def run(model_dir: Path, include_path: Path, task: str) -> dict:
    """lm-eval's own `hf` model on the real checkpoint, greedy."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
        tasks=[task],
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )


def write_questions(path: Path, name: str, golds: list[str]) -> None:
    with path.open("w") as f:
        for question, gold in zip(QUESTIONS, golds, strict=True):
            answer = {"value": gold, "aliases": [gold]} if name == "triviaqa" else [gold]
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")


@pytest.mark.parametrize(
    ("name", "yaml_path"), [("triviaqa", "triviaqa/default.yaml"), ("nq", "nq_open/nq_open.yaml")]
)
def test_scores_equal_lm_evals_builtin_task(tiny_model_dir, tmp_path, name, yaml_path):
    # The model's own greedy replies, through lm-eval's built-in task, become the gold answers of
    # half the questions; the rest get an answer it did not give. A right score is then known.
    theirs_dir, ours_dir = tmp_path / "theirs", tmp_path / "ours"
    theirs_dir.mkdir()
    data = tmp_path / f"{name}.jsonl"
    write_questions(data, name, ["-"] * len(QUESTIONS))
    theirs_task = builtin_task(name, yaml_path, data, theirs_dir)
    replies = [s["resps"][0][0] for s in run(tiny_model_dir, theirs_dir, theirs_task)["samples"][theirs_task]]
    golds = [r.strip() if k % 2 == 0 and r.strip() else "zz-not-said" for k, r in enumerate(replies)]
    write_questions(data, name, golds)

    render_tasks({name: str(data)}, ours_dir)
    ours, theirs = run(tiny_model_dir, ours_dir, name), run(tiny_model_dir, theirs_dir, theirs_task)
    mine, reference = ours["samples"][name], theirs["samples"][theirs_task]
    assert [s["arguments"] for s in mine] == [s["arguments"] for s in reference]  # the same prompts
    assert [s["filtered_resps"] for s in mine] == [s["filtered_resps"] for s in reference]
    assert [s["exact_match"] for s in mine] == [s["exact_match"] for s in reference]
    score = ours["results"][name]["exact_match,remove_whitespace"]
    assert score == theirs["results"][theirs_task]["exact_match,remove_whitespace"]
    said = sum(g != "zz-not-said" for g in golds)
    assert said > 0 and score == pytest.approx(said / len(QUESTIONS))


SPACED = [  # a reply as models give it (after a space), its gold answers, right by hand
    (" Mars", ["Mars", "Planet Mars"], True),
    (" paris", ["Paris"], True),
    ("  Mercury", ["Mercury"], True),
    (" the Pacific", ["Pacific Ocean", "the Pacific"], True),
    (" Ice cubes", ["Ice"], False),
    ("Eight", ["8", "eight"], True),
]


@pytest.mark.parametrize(
    ("name", "yaml_path"), [("triviaqa", "triviaqa/default.yaml"), ("nq", "nq_open/nq_open.yaml")]
)
def test_answers_after_a_space_are_scored_right(tmp_path, name, yaml_path):
    """lm-eval's own filters and exact match, configured by our task and by lm-eval's built-in one,
    on replies that begin with a space (the tiny test model gives none of its own)."""
    from lm_eval.tasks import TaskManager

    data = tmp_path / f"{name}.jsonl"
    with data.open("w") as f:
        for k, (_, answers, _) in enumerate(SPACED):
            answer = {"value": answers[0], "aliases": answers} if name == "triviaqa" else answers
            f.write(json.dumps({"question": f"Question {k}", "answer": answer}) + "\n")
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    theirs_dir.mkdir()
    render_tasks({name: str(data)}, ours_dir)
    theirs_task = builtin_task(name, yaml_path, data, theirs_dir)
    for folder, task_name in ((ours_dir, name), (theirs_dir, theirs_task)):
        task = TaskManager(include_path=str(folder), include_defaults=False).load_task_or_group([task_name])[
            task_name
        ]
        docs = list(task.eval_docs)
        responses = [[reply] for reply, _, _ in SPACED]
        for step in task._filters[0].filters:
            responses = list(step().apply(responses, docs))
        scores = [
            task.process_results(doc, [r])["exact_match"] for doc, r in zip(docs, responses, strict=True)
        ]
        assert scores == [float(right) for *_, right in SPACED], task_name
