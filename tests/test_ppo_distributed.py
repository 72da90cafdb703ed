"""PPO on two processes (DDP over gloo) equals PPO on one with the same global batch.

Both runs generate through one shared `align serve` endpoint, whose per-request seeds make the
rollouts independent of how the batch is split. With micro-batches of one sequence and one
minibatch per rank, the two-process loss is the one-process loss split in two halves whose
gradients DDP averages; whitening, the KL that drives β and the metrics are taken over both
ranks. So the logged numbers agree up to float summation order, the ranks end with the same
weights (the checkpoint's fingerprints), and the server takes one weight push per iteration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data/tasks/prompts_train.jsonl"
ITERATIONS = 3
COMPARED = ("reward_mean", "reward_std", "kl", "kl_coef", "policy_loss", "entropy", "advantage_mean")


def ppo_command(tiny_model_dir: Path, server, output_dir: Path, advantage: str, processes: int) -> list[str]:
    settings = dict(
        policy=tiny_model_dir,
        prompts=PROMPTS,
        output_dir=output_dir,
        advantage=advantage,
        critic_init="policy",
        reward_rule="rule_reward",
        engine="server",
        server_url=f"http://127.0.0.1:{server.port}",
        server_model=server.served_model_name,
        iterations=ITERATIONS,
        prompts_per_iteration=4,
        samples_per_prompt=2,
        max_new_tokens=8,
        max_prompt_tokens=96,
        ppo_epochs=1,
        # One minibatch per rank (the 8 rollouts of one process, or each rank's 4) and micro-batches
        # of one sequence: the same per-sequence loss terms in both layouts.
        minibatch_size=8 // processes,
        micro_batch_size=1,
        learning_rate=3e-4,
        kl_coef=0.5,
        kl_target=0.05,
        save_every=0,
        report_to="none",
        num_threads=1,
    )
    launcher = [sys.executable, "-m", "align.cli"]
    if processes == 2:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        launcher += [str(REPO / "scripts/accelerate/cpu_2proc.yaml"), "-m", "align.cli"]
    return [*launcher, "ppo", *(arg for k, v in settings.items() for arg in (f"--{k}", str(v)))]


def run(command: list[str], server) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": server.api_key}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def updates_accepted(server) -> int:
    from rollouts.server import request_json

    return request_json(f"http://127.0.0.1:{server.port}/weight_updates", None, server.api_key)["accepted"]


@pytest.fixture
def restore_server(vllm_server, tiny_model_dir):
    """The session server serves the tiny model again after the test pushed trained weights."""
    yield vllm_server
    from align.models import load_model
    from rollouts.client_engine import ClientEngine

    engine = ClientEngine(
        f"http://127.0.0.1:{vllm_server.port}", vllm_server.served_model_name, vllm_server.api_key
    )
    engine.load_weights(load_model(tiny_model_dir).named_parameters())
    engine.close()


@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_two_processes_match_one_on_the_same_global_batch(
    restore_server, tiny_model_dir, tmp_path, advantage
):
    from align.checkpoint import read_meta

    server = restore_server
    single, double = tmp_path / "one", tmp_path / "two"
    run(ppo_command(tiny_model_dir, server, single, advantage, processes=1), server)
    before = updates_accepted(server)
    run(ppo_command(tiny_model_dir, server, double, advantage, processes=2), server)
    # The starting weights, then one push per iteration: from the main process only.
    assert updates_accepted(server) - before == ITERATIONS + 1

    ones, twos = metrics(single), metrics(double)
    assert [r["iteration"] for r in twos] == [r["iteration"] for r in ones] == list(range(1, ITERATIONS + 1))
    assert [r["prompts"] for r in twos] == [r["prompts"] for r in ones]
    compared = COMPARED + (("value_loss",) if advantage == "gae" else ())
    for one, two in zip(ones, twos, strict=True):
        for key in compared:
            assert two[key] == pytest.approx(one[key], rel=1e-3, abs=1e-5), (one["iteration"], key)
    assert len({r["kl_coef"] for r in ones}) > 1  # β adapted, so its agreement means something

    latest = double / "checkpoints" / (double / "checkpoints" / "latest").read_text().strip()
    fingerprints = read_meta(latest)["rank_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
