"""A tiny PPO run (`transformers.generate` engine) leaves the reward-hacking diagnostics in
metrics.jsonl, in TensorBoard's event file (read back with TensorBoard's own EventAccumulator)
and, every `sample_log_every` iterations, a table of samples in samples.jsonl and the text panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from align.ppo.config import PPOConfig
from align.ppo.loop import run_ppo

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data/tasks/prompts_train.jsonl"

DIAGNOSTICS = (
    "entropy",
    "kl",
    "reward/rule",
    "reward/overlong_penalty",
    "response_length",
    "response_length/min",
    "response_length/max",
    "response_length/p50",
    "response_length/p90",
    "response_length/truncated_share",
    "zero_variance_groups",
    "clip_fraction",
    "clip_fraction/high",
    "clip_fraction/low",
    "clip_fraction/pos_adv",
    "clip_fraction/neg_adv",
    "rollout_correction/ratio_mean",
    "rollout_correction/ratio_min",
    "rollout_correction/ratio_max",
    "rollout_correction/clipped_share",
)


@pytest.fixture(scope="module")
def diagnosed_run(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ppo-diagnostics") / "run"
    run_ppo(
        PPOConfig(
            policy=tiny_model_dir,
            prompts=PROMPTS,
            output_dir=out,
            reward_rule="rule_reward",
            critic_init="policy",  # GAE: advantages of both signs even when rewards tie
            engine="hf",
            iterations=3,
            prompts_per_iteration=2,
            samples_per_prompt=2,
            max_new_tokens=8,
            max_prompt_tokens=96,
            minibatch_size=4,
            micro_batch_size=2,
            ppo_epochs=2,
            learning_rate=1e-3,
            clip_range_high=0.28,
            overlong_buffer=4,
            rollout_correction="token_tis",
            sample_log_every=2,
            sample_log_count=3,
            save_every=0,
            report_to=["tensorboard"],
            num_threads=1,
        )
    )
    return out


def test_metrics_hold_every_diagnostic(diagnosed_run):
    rows = [json.loads(line) for line in (diagnosed_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for row in rows:
        missing = [k for k in DIAGNOSTICS if k not in row]
        assert not missing, (row["iteration"], missing)
        assert row["response_length/min"] <= row["response_length/p50"] <= row["response_length/p90"]
        assert row["response_length/p90"] <= row["response_length/max"] <= 8
        assert 0.0 <= row["response_length/truncated_share"] <= 1.0
        assert row["reward/overlong_penalty"] <= 0.0
        assert row["entropy"] > 0.0
        # Engine and trainer compute the same model here: the ratios are 1 up to float noise.
        assert row["rollout_correction/ratio_mean"] == pytest.approx(1.0, abs=1e-3)
        assert row["rollout_correction/clipped_share"] == 0.0


def test_samples_table_every_n_iterations_in_jsonl_and_tensorboard(diagnosed_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    samples = [json.loads(line) for line in (diagnosed_run / "samples.jsonl").read_text().splitlines()]
    assert [s["iteration"] for s in samples] == [2, 2, 2]  # sample_log_every 2, 3 iterations
    for sample in samples:
        assert sample["prompt"] and isinstance(sample["response"], str)
        assert sample["reward"] == pytest.approx(sample["reward/rule"] + sample["reward/overlong_penalty"])
        for key in ("advantage", "kl", "length", "finish_reason"):
            assert key in sample

    # Accelerate's tracker writes the run under output_dir/ppo (its hyperparameters in a subfolder).
    accumulator = EventAccumulator(str(diagnosed_run / "ppo"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert set(DIAGNOSTICS) <= scalars, set(DIAGNOSTICS) - scalars
    p90 = [e.value for e in accumulator.Scalars("response_length/p90")]
    rows = [json.loads(line) for line in (diagnosed_run / "metrics.jsonl").read_text().splitlines()]
    assert p90 == pytest.approx([r["response_length/p90"] for r in rows])
    (tag,) = [t for t in accumulator.Tags()["tensors"] if t.startswith("samples")]
    (event,) = accumulator.Tensors(tag)
    table = event.tensor_proto.string_val[0].decode()
    assert event.step == 2 and "| prompt | response |" in table
    assert samples[0]["response"][:20].replace("|", "\\|").replace("\n", " ") in table


def test_length_percentiles_are_numpys():
    import torch

    from align.ppo.diagnostics import length_stats

    lengths = torch.tensor([1, 3, 3, 8, 20, 20, 4])
    stats = length_stats(lengths, torch.tensor([False, False, False, False, True, True, False]))
    assert stats["response_length/p50"] == pytest.approx(np.percentile(lengths.numpy(), 50))
    assert stats["response_length/p90"] == pytest.approx(np.percentile(lengths.numpy(), 90))  # 20.0
    assert (stats["response_length/min"], stats["response_length/max"]) == (1.0, 20.0)
    assert stats["response_length/truncated_share"] == pytest.approx(2 / 7)
