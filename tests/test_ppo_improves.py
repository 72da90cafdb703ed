"""Acceptance: on the demo task, PPO (with a critic) and a critic-free variant (RLOO) raise the mean
reward-model score of fresh samples above the SFT model's, keep the KL to the reference under the
configured bound, and improve rule-judged correctness on held-out prompts.

It runs the demo recipe's `ppo` section as is (only the estimator varies) on the SFT and reward
models of a finished `make demo` run (ALIGN_DEMO_RUN, default runs/demo), about 4 minutes per
variant on two cores: `pytest -m acceptance tests/test_ppo_improves.py`. Outside the default suite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from align.config import load_config
from align.ppo.config import PPOConfig
from align.ppo.loop import run_ppo

REPO = Path(__file__).resolve().parent.parent
DEMO_RUN = Path(os.environ.get("ALIGN_DEMO_RUN", REPO / "runs/demo"))


@pytest.mark.slow
@pytest.mark.acceptance
@pytest.mark.skipif(
    not (DEMO_RUN / "rm" / "config.json").is_file(), reason=f"no finished demo run in {DEMO_RUN}"
)
@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_beats_sft_on_reward_and_correctness_within_the_kl_bound(advantage, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config: PPOConfig = load_config(
        PPOConfig,
        REPO / "scripts/recipes/demo.yaml",
        {"advantage": advantage, "output_dir": str(tmp_path), "report_to": ["none"], "save_every": 0},
        section="ppo",
        run_dir=str(DEMO_RUN),
    )
    run_ppo(config)
    quality = json.loads((tmp_path / "quality.json").read_text())
    sft, ppo = quality["reference"], quality["policy"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    print(f"{advantage}: SFT {sft} -> PPO {ppo}; KL {[round(r['kl'], 2) for r in rows]}")
    assert ppo["reward_mean"] > sft["reward_mean"] + 0.2
    assert ppo["correct"] > sft["correct"] + 0.02  # about two standard errors of 1,600 samples
    assert max(r["kl"] for r in rows) < config.kl_bound
