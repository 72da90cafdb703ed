"""`align pipeline` re-runs: finished stages are skipped until their config section changes, and a
stage that runs again makes every later stage run too."""

from __future__ import annotations

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
