"""What `align ppo` leaves beside the policy, from the tiny pipeline run: metrics, curves, quality."""

import json

import pytest


@pytest.mark.slow
def test_ppo_writes_metrics_curves_and_held_out_quality_of_reference_and_policy(tiny_run_dir):
    ppo = tiny_run_dir / "ppo"
    rows = [json.loads(line) for line in (ppo / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert (ppo / "curves.png").stat().st_size > 1000
    quality = json.loads((ppo / "quality.json").read_text())
    assert quality["prompts"] == 4
    for model in ("reference", "policy"):
        assert quality[model]["samples"] == 4 * 8  # eval_samples_per_prompt per prompt
        assert 0.0 <= quality[model]["correct"] <= 1.0
        by_kind = quality[model]["correct_by_kind"]
        assert by_kind and set(by_kind) <= {"add", "compare", "count", "unsafe"}
        assert all(0.0 <= share <= 1.0 for share in by_kind.values())
        assert isinstance(quality[model]["reward_mean"], float)
    # eval_every: 1 in the tiny recipe: every row carries the held-out evaluation, and the last one
    # is the final policy's in quality.json (same samples: one seed for every evaluation of a run).
    for row in rows:
        assert 0.0 <= row["eval/correct"] <= 1.0
        assert {k.removeprefix("eval/correct/") for k in row if k.startswith("eval/correct/")} <= {
            "add",
            "compare",
            "count",
            "unsafe",
        }
        assert isinstance(row["eval/reward_mean"], float)
    assert rows[-1]["eval/correct"] == quality["policy"]["correct"]
    assert rows[-1]["eval/reward_mean"] == quality["policy"]["reward_mean"]
