"""Checkpoint and resume: a PPO run killed with SIGKILL continues with the same prompt order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.ppo.config import PPOConfig
from align.ppo.loop import run_ppo

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data/tasks/prompts_train.jsonl"
SETTINGS = dict(
    reward_rule="rule_reward",
    critic_init="policy",
    engine="hf",
    iterations=4,
    prompts_per_iteration=4,
    samples_per_prompt=1,
    max_new_tokens=6,
    max_prompt_tokens=96,
    minibatch_size=4,
    micro_batch_size=2,
    ppo_epochs=1,
    save_every=1,
    report_to=["none"],
    num_threads=1,
)


def rows(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_after_kill_9_sees_the_same_prompts_and_weights(tiny_model_dir: Path, tmp_path: Path):
    straight = tmp_path / "straight"
    run_ppo(PPOConfig(policy=tiny_model_dir, prompts=PROMPTS, output_dir=straight, **SETTINGS))

    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "align.cli",
        "ppo",
        "--policy",
        str(tiny_model_dir),
        "--prompts",
        str(PROMPTS),
        "--output_dir",
        str(killed),
    ]
    for key, value in SETTINGS.items():
        command += [f"--{key}", ",".join(value) if isinstance(value, list) else str(value)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted_at = int(latest.read_text().strip().removeprefix("step-"))
    assert interrupted_at < SETTINGS["iterations"], "the run finished before it could be killed"

    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = rows(killed)
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4]
    assert [r["prompts"] for r in resumed] == [r["prompts"] for r in rows(straight)]
    # Same weights, RNG and prompts: the resumed run samples and learns what the straight one did.
    for ours, theirs in zip(resumed, rows(straight), strict=True):
        assert ours["reward_mean"] == pytest.approx(theirs["reward_mean"], abs=1e-6)
        assert ours["kl"] == pytest.approx(theirs["kl"], abs=1e-4)
