"""`align pipeline` re-runs: finished stages are skipped until their config section changes, a
stage that runs again makes every later stage run too, and a training stage run again starts over."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from align.pipeline import PipelineConfig, run_pipeline

REPO = Path(__file__).resolve().parent.parent


def ran_stages(caplog: pytest.LogCaptureFixture, recipe: Path) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="align.pipeline"):
        run_pipeline(PipelineConfig(recipe=recipe))
    finished = [r.getMessage() for r in caplog.records if ": finished in " in r.getMessage()]
    return [message.split("] ")[1].split(": finished in ")[0] for message in finished]


@pytest.mark.slow
def test_only_stages_whose_config_changed_and_the_ones_after_them_run_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = tmp_path / "candidates.jsonl"
    lines = (REPO / "data/tasks/candidates.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    candidates.write_text("".join(lines[:5]), encoding="utf-8")
    store = "sqlite:///${run_dir}/labels.sqlite"
    recipe = {
        "run_dir": str(tmp_path / "run"),
        "pipeline": {"stages": ["label add", "label judge", "label export"]},
        "label-add": {"store": store, "jsonl": str(candidates)},
        "label-judge": {"store": store},
        "label-export": {"store": store, "output": "${run_dir}/preferences.jsonl"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")

    assert ran_stages(caplog, path) == ["label add", "label judge", "label export"]
    assert ran_stages(caplog, path) == []

    recipe["label-export"]["min_margin"] = 0.5
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert ran_stages(caplog, path) == ["label export"]

    recipe["label-judge"]["tie_margin"] = 0.1
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert ran_stages(caplog, path) == ["label judge", "label export"]


@pytest.mark.slow
def test_a_redone_training_stage_starts_over_instead_of_resuming_its_finished_run(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ppo = {
        "policy": str(tiny_model_dir),
        "prompts": str(REPO / "data/tasks/prompts_train.jsonl"),
        "output_dir": "${run_dir}/ppo",
        "reward_rule": "rule_reward",
        "advantage": "rloo",
        "samples_per_prompt": 2,
        "engine": "hf",
        "iterations": 2,
        "prompts_per_iteration": 2,
        "max_new_tokens": 4,
        "max_prompt_tokens": 96,
        "minibatch_size": 4,
        "micro_batch_size": 4,
        "save_every": 1,
        "report_to": ["none"],
        "num_threads": 1,
        "kl_coef": 0.05,
    }
    recipe = {"run_dir": str(tmp_path / "run"), "pipeline": {"stages": ["ppo"]}, "ppo": ppo}
    path = tmp_path / "recipe.yaml"
    metrics = tmp_path / "run/ppo/metrics.jsonl"

    def kl_coefs() -> list[float]:
        return [json.loads(line)["kl_coef"] for line in metrics.read_text().splitlines()]

    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert ran_stages(caplog, path) == ["ppo"]
    assert kl_coefs() == [0.05, 0.05]

    ppo["kl_coef"] = 0.07
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert ran_stages(caplog, path) == ["ppo"]
    # Resuming the finished run's last checkpoint would have trained nothing and kept these at 0.05.
    assert kl_coefs() == [0.07, 0.07]
    assert "removing the earlier run's checkpoints" in caplog.text
