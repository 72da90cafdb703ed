"""TriviaQA and NQ are scored as lm-eval's own built-in tasks score them.

lm-eval's `triviaqa` and `nq_open` task YAMLs are loaded from the installed package with only their
dataset swapped for local files, and run beside the suite's tasks on the same questions. The model
is a stand-in that answers each question with a fixed string, most of them with the leading space
real models produce (" Mars"): what is under test is the tasks' prompts, filters and metrics, which
must turn those answers into the same per-item results and score as lm-eval's, and into the score
worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from align.eval.benchmarks import render_tasks

QUESTIONS = [  # question, gold answers, the stand-in model's answer, correct by hand
    ("Which planet is known as the Red Planet", ["Mars", "Planet Mars"], " Mars", True),
    ("What is the capital of France?", ["Paris"], " paris", True),
    ("Who wrote Hamlet", ["William Shakespeare", "Shakespeare"], " Shakespeare", True),
    ("What is the largest ocean", ["Pacific Ocean", "the Pacific"], " the Pacific", True),
    ("What gas do plants absorb", ["Carbon dioxide", "CO2"], " Oxygen", False),
    ("How many legs has a spider", ["8", "eight"], "Eight", True),
    ("What is frozen water called", ["Ice"], " Ice cubes", False),
    ("Which metal is liquid at room temperature", ["Mercury"], "  Mercury", True),
]


class AnswerLM:
    """Answers a question found in the prompt with its fixed reply (generation only)."""

    def __new__(cls, replies: dict[str, str]):
        from lm_eval.api.model import LM

        class _AnswerLM(LM):
            def generate_until(self, requests):
                out = []
                for request in requests:
                    context = request.args[0]
                    out.append(next(reply for question, reply in replies.items() if question in context))
                return out

            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        return _AnswerLM()


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


def run(lm, include_path: Path, task: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )


@pytest.mark.parametrize(
    ("name", "yaml_path"), [("triviaqa", "triviaqa/default.yaml"), ("nq", "nq_open/nq_open.yaml")]
)
def test_scores_equal_lm_evals_builtin_task(tmp_path, name, yaml_path):
    data = tmp_path / f"{name}.jsonl"
    with data.open("w") as f:
        for question, answers, _, _ in QUESTIONS:
            answer = {"value": answers[0], "aliases": answers} if name == "triviaqa" else answers
            f.write(json.dumps({"question": question, "answer": answer}) + "\n")
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    theirs_dir.mkdir()
    render_tasks({name: str(data)}, ours_dir)
    theirs_task = builtin_task(name, yaml_path, data, theirs_dir)
    lm = AnswerLM({q: reply for q, _, reply, _ in QUESTIONS})
    ours, theirs = run(lm, ours_dir, name), run(lm, theirs_dir, theirs_task)

    mine, reference = ours["samples"][name], theirs["samples"][theirs_task]
    assert [s["arguments"] for s in mine] == [s["arguments"] for s in reference]  # the same prompts
    assert [s["filtered_resps"] for s in mine] == [s["filtered_resps"] for s in reference]
    assert [s["exact_match"] for s in mine] == [s["exact_match"] for s in reference]
    score = ours["results"][name]["exact_match,remove_whitespace"]
    assert score == theirs["results"][theirs_task]["exact_match,remove_whitespace"]
    # By hand: a leading space is no mistake; "Ice cubes" is not "Ice"; NQ also ignores articles
    # ("the Pacific" matches "Pacific Ocean"'s alias either way here).
    assert score == pytest.approx(sum(correct for *_, correct in QUESTIONS) / len(QUESTIONS))
