"""`align eval`: config checked at the door; a run writes results.json, tables and charts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from align.cli import main
from align.eval.benchmarks import render_tasks

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
REPO = FIXTURES.parents[2]


def test_unknown_benchmark_is_rejected_naming_the_key(tiny_model_dir, capsys):
    code = main(["eval", "--models", f"{{m: {tiny_model_dir}}}", "--benchmarks", "{mmlu2: x}"])
    assert code == 2
    assert "benchmarks.mmlu2: not a built-in benchmark" in capsys.readouterr().err


def test_missing_checkpoint_is_rejected(tmp_path, capsys):
    code = main(["eval", "--models", f"{{m: {tmp_path / 'nope'}}}", "--benchmarks", "{humaneval: builtin}"])
    assert code == 2
    assert "models.m:" in capsys.readouterr().err


def test_every_fixture_benchmark_reads_into_lm_eval_tasks(tmp_path):
    benchmarks = {
        "mmlu": FIXTURES / "mmlu", "ceval": FIXTURES / "ceval", "agieval": FIXTURES / "agieval",
        "gaokao": FIXTURES / "gaokao", "race": FIXTURES / "race",
        "truthfulqa": FIXTURES / "truthfulqa_mc_task.json", "truthfulqa_mc2": FIXTURES / "truthfulqa_mc_task.json",
        "crows_pairs": FIXTURES / "crows_pairs_anonymized.csv", "gsm8k": FIXTURES / "gsm8k",
        "triviaqa": FIXTURES / "triviaqa.jsonl", "nq": FIXTURES / "nq_open.jsonl", "mbpp": FIXTURES / "mbpp.jsonl",
        "humaneval": "builtin", "demo": REPO / "data" / "tasks" / "prompts_eval.jsonl",
    }  # fmt: skip
    rendered = render_tasks({k: str(v) for k, v in benchmarks.items()}, tmp_path)
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(
        list(rendered.tasks.values()), TaskManager(include_path=str(tmp_path), include_defaults=False)
    )
    assert len(tasks) == len(benchmarks)
    assert rendered.columns["mmlu"] == {
        "mmlu_humanities": "Humanities", "mmlu_stem": "STEM",
        "mmlu_social_sciences": "Social Science", "mmlu_other": "Other",
    }  # fmt: skip
    assert rendered.columns["ceval"] == {
        "ceval_stem": "STEM",
        "ceval_hard": "Hard",
    }  # the fixture's one subject
    gsm8k = next(t for k, t in tasks.items() if getattr(k, "group_name", k) == "gsm8k")
    assert gsm8k.config.num_fewshot == 5
    row = json.loads((tmp_path / "mmlu_virology.test.jsonl").read_text().splitlines()[0])
    assert row["query"].endswith("\nD. " + row["query"].split("\nD. ")[1]) and row["choices"] == [
        "A",
        "B",
        "C",
        "D",
    ]


@pytest.mark.slow
def test_align_eval_writes_results_tables_and_charts(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", "--models", f"{{tiny: {tiny_model_dir}}}", "--backend", "hf", "--limit", "2"]
    args += ["--benchmarks", f"{{mmlu: {FIXTURES / 'mmlu'}, demo: {REPO / 'data/tasks/prompts_eval.jsonl'}}}"]
    args += [
        "--references",
        str(REPO / "align/eval/references/internlm_table4.yaml"),
        "--output_dir",
        str(out),
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    scores = results["models"]["tiny"]["scores"]
    assert set(scores) == {"mmlu", "demo"}
    assert set(scores["mmlu"]["columns"]) == {"Humanities", "STEM", "Social Science", "Other"}
    assert 0 <= scores["demo"]["overall"] <= 100
    table = (out / "tables" / "mmlu.md").read_text()
    assert "| tiny |" in table and "| InternLM |" in table
    assert (out / "tables" / "overview.png").stat().st_size > 0


@pytest.mark.slow
def test_generation_tasks_score_through_a_vllm_endpoint(vllm_server, tiny_model_dir, tmp_path, monkeypatch):
    from align.eval.config import EvalConfig
    from align.eval.run import run_eval

    monkeypatch.setenv("OPENAI_API_KEY", vllm_server.api_key)
    benchmarks = {"triviaqa": str(FIXTURES / "triviaqa.jsonl"), "nq": str(FIXTURES / "nq_open.jsonl")}
    models = {"served": f"http://127.0.0.1:{vllm_server.port}/v1", "local": str(tiny_model_dir)}
    saved = run_eval(EvalConfig(models=models, benchmarks=benchmarks, output_dir=tmp_path, backend="hf"))
    # The endpoint greedy-decodes the same checkpoint, so it scores as lm-eval's hf model does.
    assert saved["models"]["served"]["scores"] == saved["models"]["local"]["scores"]
    assert saved["lm_eval"]["served"]["triviaqa"]["sample_len"] == 2


@pytest.mark.slow
def test_a_users_own_task_folder_is_scored_and_reported(tiny_model_dir, tmp_path):
    """One multiple-choice and one generative task of the user's own, in lm-eval's YAML, scored
    through `align eval` into the same tables as the built-in benchmarks."""
    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    rows = [{"q": f"{a} + {b} =", "choices": [str(a + b), str(a + b + 1)], "gold": 0, "answer": str(a + b)}
            for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (0, 7), (6, 2)]]  # fmt: skip
    (tasks / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(tasks / "sums.jsonl")}},
              "test_split": "test", "doc_to_text": "{{q}}"}  # fmt: skip
    (tasks / "sums_mc.yaml").write_text(yaml.safe_dump({
        "task": "sums_mc", **common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
        "doc_to_target": "gold", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }))  # fmt: skip
    (tasks / "sums_gen.yaml").write_text(yaml.safe_dump({
        "task": "sums_gen", **common, "output_type": "generate_until", "doc_to_target": "answer",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 4},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }))  # fmt: skip
    out = tmp_path / "eval"
    benchmarks = f"{{mmlu: {FIXTURES / 'mmlu'}, sums_mc: {tasks}, sums_gen: {tasks}}}"
    args = ["eval", "--models", f"{{tiny: {tiny_model_dir}}}", "--backend", "hf", "--limit", "6"]
    assert main([*args, "--benchmarks", benchmarks, "--output_dir", str(out)]) == 0
    scores = json.loads((out / "results.json").read_text())["models"]["tiny"]["scores"]
    assert set(scores) == {"mmlu", "sums_mc", "sums_gen"}
    assert scores["sums_mc"]["n"] == 6 and 0 <= scores["sums_mc"]["overall"] <= 100
    assert scores["sums_gen"]["n"] == 6
    report, latex = (out / "report.md").read_text(), (out / "tables" / "overview.tex").read_text()
    assert "sums_mc (6 questions)" in report and "sums_gen (6 questions)" in report
    assert r"sums\_mc (6 questions)" in latex and r"sums\_gen (6 questions)" in latex
