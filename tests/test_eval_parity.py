"""Our evaluation path (rendered tasks + the vLLM `LM`) scores exactly as lm-eval run directly
(its own `hf` model) on the same checkpoint and files; HumanEval runs offline end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.eval.benchmarks import HUMANEVAL_FILE, render_tasks
from align.eval.run import evaluate, headline_scores

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"


def lm_eval_directly(model_dir: Path, include_path: Path, tasks: list[str], limit: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
        tasks=tasks,
        task_manager=TaskManager(include_path=str(include_path), include_defaults=False),
        batch_size=16,
        limit=limit,
        bootstrap_iters=0,
    )


@pytest.mark.slow
def test_mc_and_generative_scores_equal_lm_eval_run_directly(tiny_model_dir, vllm_engine, tmp_path):
    from align.eval.vllm_lm import VLLMEngineLM

    rendered = render_tasks(
        {"mmlu": str(FIXTURES / "mmlu"), "triviaqa": str(FIXTURES / "triviaqa.jsonl")}, tmp_path
    )
    ours = evaluate(VLLMEngineLM(vllm_engine.llm), rendered, limit=3, log_samples=True)
    theirs = lm_eval_directly(tiny_model_dir, tmp_path, ["mmlu", "triviaqa"], limit=3)
    assert set(ours["results"]) == set(theirs["results"])
    for task, scores in theirs["results"].items():
        metrics = {k: v for k, v in scores.items() if isinstance(v, float)}
        assert metrics and {k: ours["results"][task][k] for k in metrics} == pytest.approx(metrics), task
    # Not only the same accuracy: the same log-likelihood per choice and the same generated text.
    for task in ("mmlu_virology", "triviaqa"):
        mine = [s["filtered_resps"] for s in ours["samples"][task]]
        reference = [s["filtered_resps"] for s in theirs["samples"][task]]
        if task == "triviaqa":
            assert mine == reference
        else:
            for a, b in zip(mine, reference, strict=True):
                assert [ll for ll, _ in a] == pytest.approx([ll for ll, _ in b], abs=1e-3)


@pytest.mark.slow
def test_humaneval_runs_offline_on_the_shipped_problems(vllm_engine, tmp_path):
    from align.eval.vllm_lm import VLLMEngineLM

    rendered = render_tasks({"humaneval": HUMANEVAL_FILE}, tmp_path)
    results = evaluate(VLLMEngineLM(vllm_engine.llm, max_gen_toks=64), rendered, limit=48)["results"]
    assert results["humaneval"]["sample_len"] == 48  # of the 164 shipped problems (all 164: the sandbox test)
    assert headline_scores(results, rendered)["humaneval"]["overall"] <= 2.0  # an untrained tiny model
