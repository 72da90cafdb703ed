"""Crash and spike recovery: real SIGKILLs (mid-step, mid-checkpoint) and an injected loss spike."""

import json
import random
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from align.checkpoint import CheckpointManager
from align.config import load_config
from align.pretrain.config import PretrainConfig
from align.pretrain.loop import run_pretrain


@pytest.fixture
def one_thread():
    """Train in-process on one thread, as the subprocess runs do (see run_align in conftest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def final_weights(run):
    return load_file(run / "final" / "model.safetensors")


def consumed_ids(run):
    latest = CheckpointManager(run / "checkpoints").latest()
    return json.loads((latest / "ledger.json").read_text())["consumed"]


def assert_same_as_baseline(run, baseline):
    ours, theirs = final_weights(run), final_weights(baseline)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # bit-identical
    assert consumed_ids(run) == consumed_ids(baseline)


@pytest.mark.slow
def test_kill_9_at_random_steps_then_resume_auto_reproduces_the_uninterrupted_run(
    pretrain_recipe, pretrain_baseline, run_align, tmp_path
):
    run = tmp_path / "run"
    recipe = pretrain_recipe(run)
    kill_steps = sorted(random.Random(7).sample(range(1, 10), 3))
    for step in kill_steps:
        killed = run_align(
            ["pretrain", "--config", str(recipe), "--resume", "auto", "--test_kill_at_step", str(step)]
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert not (run / "final").exists()
    finished = run_align(["pretrain", "--config", str(recipe), "--resume", "auto"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "resumed from" in finished.stderr
    assert_same_as_baseline(run, pretrain_baseline)


@pytest.mark.slow
def test_kill_while_writing_a_checkpoint_leaves_latest_on_a_complete_one(
    pretrain_recipe, pretrain_baseline, run_align, tmp_path
):
    run = tmp_path / "run"
    recipe = pretrain_recipe(run)
    killed = run_align(["pretrain", "--config", str(recipe), "--test_kill_in_checkpoint", "6"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    root = run / "checkpoints"
    partial = root / "step-00000006.tmp"
    assert (partial / "model.safetensors").is_file() and not (partial / "optimizer.pt").exists()
    assert (root / "latest").read_text().strip() == "step-00000005"  # phase 1's end, complete
    assert {"optimizer.pt", "ledger.json", "checkpoint.json"} <= {
        p.name for p in (root / "step-00000005").iterdir()
    }
    finished = run_align(["pretrain", "--config", str(recipe), "--resume", "auto"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not partial.exists()
    assert_same_as_baseline(run, pretrain_baseline)


@pytest.mark.slow
def test_injected_loss_spike_rolls_back_skips_the_batch_and_finishes(pretrain_recipe, tmp_path, one_thread):
    run = tmp_path / "run"
    config = load_config(PretrainConfig, pretrain_recipe(run), {"test_spike_at_step": 7})
    final = run_pretrain(config)
    assert (final / "model.safetensors").is_file()
    ledger = json.loads((CheckpointManager(run / "checkpoints").latest() / "ledger.json").read_text())
    assert [s["step"] for s in ledger["skipped"]] == [7]
    assert any("loss spike" in e and "at step 7" in e for e in ledger["events"])
    skipped_ids = set(ledger["skipped"][0]["ids"])
    assert skipped_ids and not skipped_ids & set(ledger["consumed"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 10  # the plan's 2 x 5 steps all trained


@pytest.mark.slow
def test_from_phase_2_restarts_at_the_end_of_phase_1_and_sets_later_checkpoints_aside(
    pretrain_recipe, pretrain_baseline, tmp_path, one_thread
):
    run = tmp_path / "run"
    shutil.copytree(pretrain_baseline, run)
    shutil.rmtree(run / "final")
    config = load_config(PretrainConfig, pretrain_recipe(run), {"from_phase": 2})
    run_pretrain(config)
    assert sorted(p.name for p in (run / "checkpoints" / "superseded").iterdir()) == [
        "step-00000008",
        "step-00000010",
    ]
    assert_same_as_baseline(run, pretrain_baseline)
