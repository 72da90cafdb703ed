"""`align eval`: score checkpoints on local benchmark files with lm-evaluation-harness.

For each model: build an lm-eval `LM` (in-process vLLM, lm-eval's `hf`, or an OpenAI-compatible
endpoint), run the rendered tasks, keep each benchmark's headline and per-category scores, and
write everything to `results.json`; then render the report.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import urllib.request
from pathlib import Path
from typing import Any

from align.eval.benchmarks import RenderedTasks, benchmark_info, render_tasks
from align.eval.config import EvalConfig, ReportConfig

log = logging.getLogger(__name__)


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every model of `config` and write `output_dir/results.json` (and the report)."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_tasks(config.benchmarks, config.output_dir / "tasks")
    models, raw = {}, {}
    for label, location in config.models.items():
        log.info("evaluating %s (%s) on %s", label, location, ", ".join(rendered.tasks))
        lm = _make_lm(config, location)
        try:
            results = evaluate(lm, rendered, limit=config.limit, seed=config.seed)["results"]
        finally:
            if hasattr(lm, "close"):
                lm.close()
            del lm
            gc.collect()
        models[label] = {"checkpoint": location, "scores": headline_scores(results, rendered)}
        raw[label] = results
    saved = {
        "benchmarks": {
            name: {
                **benchmark_info(name),
                "columns": list(rendered.columns.get(name, {}).values()),
                "location": str(config.benchmarks[name]),
            }
            for name in rendered.tasks
        },
        "models": models,
        "references": str(config.references) if config.references else None,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "lm_eval": raw,
    }
    path = config.output_dir / "results.json"
    path.write_text(json.dumps(saved, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    log.info("wrote %s", path)
    if config.report:
        from align.eval.report import render_report

        render_report(ReportConfig(output_dir=config.output_dir, references=config.references))
    return saved


def evaluate(
    lm: Any, rendered: RenderedTasks, limit: int | None = None, seed: int = 0, log_samples: bool = False
) -> dict[str, Any]:
    """Run lm-eval on the rendered tasks with an `LM`; lm-eval's output (`results`, `samples`, ...)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(rendered.tasks.values()),
        task_manager=TaskManager(
            include_path=[str(p) for p in (rendered.include_path, *rendered.user_folders)],
            include_defaults=rendered.lm_eval_registry,
        ),
        limit=limit,
        log_samples=log_samples,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        confirm_run_unsafe_code=True,  # code runs in align.eval.sandbox
    )
    return out


def metric_value(results: dict[str, Any], task: str, metric: str | None) -> float:
    """A task's metric from lm-eval results, whatever filter it ran under (`acc,none`,
    `exact_match,strict-match`); `metric` None: the task's first (a user's own task)."""
    entry = results[task]
    for key, value in entry.items():
        if (
            "," not in key
            or "_stderr" in key
            or not isinstance(value, int | float)
            or isinstance(value, bool)
        ):
            continue
        if metric is None or key.split(",")[0] == metric:
            return float(value)
    raise KeyError(f"{task}: no {metric} in lm-eval results ({', '.join(entry)})")


def headline_scores(results: dict[str, Any], rendered: RenderedTasks) -> dict[str, dict[str, Any]]:
    """Per benchmark: the overall score and the per-category/subject columns, in percent, each with
    the number of questions scored (`n`, `columns_n`) and a standard error (`stderr`,
    `columns_stderr`, in points). Every metric here is a mean of 0/1 scores over the questions (a
    group's is weighted by size, so the pooled share), so its standard error is lm-eval's for a mean,
    the sample standard deviation over sqrt(n): sqrt(p(1-p)/(n-1))."""
    scores = {}
    for name, task in rendered.tasks.items():
        metric = benchmark_info(name)["metric"]
        overall, n = metric_value(results, task, metric), questions(results, rendered, task)
        entry: dict[str, Any] = {"overall": 100 * overall, "n": n, "stderr": share_stderr(overall, n)}
        entry["columns"], entry["columns_n"], entry["columns_stderr"] = {}, {}, {}
        for sub, title in rendered.columns.get(name, {}).items():
            value, count = column_value(results, rendered, sub, metric), questions(results, rendered, sub)
            entry["columns"][title] = 100 * value
            entry["columns_n"][title] = count
            entry["columns_stderr"][title] = share_stderr(value, count)
        scores[name] = entry
    return scores


def column_value(results: dict[str, Any], rendered: RenderedTasks, column: str, metric: str | None) -> float:
    """A column's score: lm-eval's for a task or group, else pooled over its subjects' questions
    (as lm-eval's groups aggregate, a mean weighted by size)."""
    if column in results:
        return metric_value(results, column, metric)
    sizes = {leaf: int(results[leaf]["sample_len"]) for leaf in rendered.leaves[column]}
    return sum(metric_value(results, leaf, metric) * n for leaf, n in sizes.items()) / sum(sizes.values())


def questions(results: dict[str, Any], rendered: RenderedTasks, task: str) -> int:
    """How many questions a task or group was scored on."""
    return sum(int(results[leaf].get("sample_len", 0)) for leaf in rendered.leaves.get(task, [task]))


def share_stderr(share: float, n: int) -> float | None:
    """The standard error, in percentage points, of a share of n 0/1 scores (None for n < 2)."""
    return 100 * math.sqrt(share * (1 - share) / (n - 1)) if n > 1 else None


def _auth_header() -> dict[str, str]:
    key = os.environ.get("OPENAI_API_KEY")  # lm-eval's API models read the same variable
    return {"Authorization": f"Bearer {key}"} if key else {}


def _make_lm(config: EvalConfig, location: str) -> Any:
    if location.startswith(("http://", "https://")):
        from lm_eval.models.openai_completions import LocalCompletionsAPI

        base = location.rstrip("/")
        request = urllib.request.Request(f"{base}/models", headers=_auth_header())
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (user's own server)
            served = json.load(response)["data"][0]["id"]
        return LocalCompletionsAPI(
            base_url=f"{base}/completions",
            model=served,
            tokenizer_backend=None,
            tokenized_requests=False,
            num_concurrent=8,
            max_gen_toks=256,
        )
    if config.backend == "hf":
        from lm_eval.models.huggingface import HFLM

        kwargs = {"max_length": config.max_model_len} if config.max_model_len else {}
        return HFLM(
            pretrained=location, dtype="float32", device="cpu", batch_size=config.batch_size, **kwargs
        )
    from align.eval.vllm_lm import VLLMEngineLM

    return VLLMEngineLM.from_checkpoint(location, max_model_len=config.max_model_len, seed=config.seed)
