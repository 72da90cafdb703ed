"""The loss and the gradient of an update do not depend on how its minibatch is split into
micro-batches (gradient accumulation): every loss aggregation normalises by the counts of the
whole minibatch, not of each micro-batch (TRL #3021 averaged per-micro-batch means, which weighs
the tokens of a short micro-batch more). Run on `train_on`, the update the loop runs, with a tiny
model; the two-process half of the claim is `test_ppo_distributed.py`."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from align.models import load_model
from align.ppo.config import LOSS_AGGREGATIONS, PPOConfig
from align.ppo.experience import make_experience
from align.ppo.iteration import compute_advantages, train_on
from rollouts.base import Rollout


def rollout(prompt: list[int], response: list[int]) -> Rollout:
    return Rollout(0, prompt, response, "", None, "stop")


# Four groups of two, responses of 1 to 7 tokens: micro-batches of one length would hide the bug.
ROLLOUTS = [
    rollout([5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16]),
    rollout([5, 6], [10]),
    rollout([7, 8, 9], [11, 12, 13]),
    rollout([5], [12, 14]),
    rollout([9, 8, 7, 6], [20, 21, 22, 23, 24]),
    rollout([6, 7], [30, 31, 32, 33]),
    rollout([8], [40, 41, 42, 43, 44, 45]),
    rollout([5, 9, 6], [50, 51]),
]
SCORES = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 0.0, 3.0, 1.0])


def rollout_config(tiny_model_dir: Path, **settings) -> PPOConfig:
    """RLOO over the 8 rollouts (groups of 2) as one minibatch, KL in the loss, one epoch."""
    return PPOConfig(
        policy=tiny_model_dir,
        output_dir=Path("unused"),
        prompts=Path(__file__),
        reward_rule="is_correct",
        critic_init="policy",
        samples_per_prompt=2,
        ppo_epochs=1,
        minibatch_size=8,
        **{"advantage": "rloo", "kl_penalty": "loss", **settings},
    )


def update(tiny_model_dir: Path, micro_batch_size: int, **settings) -> tuple[dict, torch.Tensor]:
    """One optimizer step (SGD, lr 1: the weights move by minus the gradient) on the 8 rollouts as
    one minibatch; returns train_on's statistics and the change of every weight."""
    from accelerate import Accelerator

    from align.ppo.critic import TokenCritic

    config = rollout_config(
        tiny_model_dir,
        micro_batch_size=micro_batch_size,
        max_grad_norm=0.0,
        **{"entropy_coef": 0.01, **settings},
    )
    torch.manual_seed(0)
    policy = load_model(tiny_model_dir)
    reference = load_model(tiny_model_dir)
    with torch.no_grad():
        for (
            param
        ) in reference.parameters():  # a reference the policy is not equal to: the KL term has a gradient
            param.add_(0.02 * torch.randn_like(param))
    critic = TokenCritic.from_pretrained(tiny_model_dir, 0) if config.advantage == "gae" else None
    experience = make_experience(
        ROLLOUTS, [{}] * 8, policy, reference, critic, None, 0, 1.0, 8, torch.device("cpu"), scores=SCORES
    )
    # The engine sampled from a slightly different distribution than the trainer computes.
    experience.engine_logprobs = (
        experience.old_logprobs + 0.3 * torch.randn_like(experience.old_logprobs)
    ) * experience.response_mask
    compute_advantages(experience, 0.1, config)
    models = [m for m in (policy, critic) if m is not None]
    before = [p.detach().clone() for m in models for p in m.parameters()]
    optimizers = [torch.optim.SGD(m.parameters(), lr=1.0) for m in models]
    stats = train_on(experience, policy, critic, optimizers, Accelerator(cpu=True), config, kl_coef=0.1)
    after = [p.detach() for m in models for p in m.parameters()]
    return stats, torch.cat([(a - b).flatten() for a, b in zip(after, before, strict=True)])


CASES = [
    *(
        {"loss_aggregation": mode, "rollout_correction": "token_tis", "clip_range_high": 0.28}
        for mode in LOSS_AGGREGATIONS
    ),
    {
        "advantage": "grpo",
        "loss_aggregation": "seq-mean-token-sum-norm",
        "rollout_correction": "sequence_mask",
    },
    {"advantage": "gae", "kl_penalty": "reward", "rollout_correction": "token_mask"},  # the critic's loss too
]


@pytest.mark.parametrize("settings", CASES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_loss_and_gradient_do_not_depend_on_the_micro_batch_split(tiny_model_dir, settings):
    whole, whole_delta = update(tiny_model_dir, 8, **settings)
    assert whole_delta.norm() > 0
    for micro in (4, 2):  # 2 and 4 accumulation steps
        split, split_delta = update(tiny_model_dir, micro, **settings)
        for key in ("policy_loss", "kl_loss", "value_loss", "entropy", "clip_fraction"):
            if key in whole:
                assert split[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-9), (micro, key)
        assert ((split_delta - whole_delta).norm() / whole_delta.norm()).item() < 1e-5, micro


def test_the_aggregations_weigh_the_same_tokens_differently(tiny_model_dir):
    losses = {
        mode: update(tiny_model_dir, 8, loss_aggregation=mode)[0]["policy_loss"] for mode in LOSS_AGGREGATIONS
    }
    # Responses of different lengths: no two aggregations give the same loss (so the test above
    # compared four different computations).
    values = sorted(losses.values())
    assert all(not math.isclose(a, b, rel_tol=1e-3) for a, b in zip(values, values[1:], strict=False)), losses


def test_engine_logprobs_a_factor_three_below_get_the_tis_cap(tiny_model_dir):
    """Engine log-probs log 3 below the trainer's on every token (ρ = 3): TIS weighs each token's
    loss by the cap, 2, a sequence's ratio (3^length) is capped at 2 as well, and the mask modes
    drop every token (3 lies outside [0.5, 2])."""
    plain = update_with_engine_offset(tiny_model_dir, "none", math.log(3.0))
    # On-policy first pass (ρ_new/old = 1): the surrogate is -w·A per token.
    assert plain["policy_loss"] != 0.0
    for mode, factor in (
        ("token_tis", 2.0),
        ("sequence_tis", 2.0),
        ("token_mask", 0.0),
        ("sequence_mask", 0.0),
    ):
        corrected = update_with_engine_offset(tiny_model_dir, mode, math.log(3.0))
        assert corrected["policy_loss"] == pytest.approx(factor * plain["policy_loss"], rel=1e-5, abs=1e-9), (
            mode
        )


def update_with_engine_offset(tiny_model_dir: Path, mode: str, offset: float) -> dict:
    from accelerate import Accelerator

    config = rollout_config(
        tiny_model_dir, micro_batch_size=4, rollout_correction=mode, rollout_correction_cap=2.0
    )
    torch.manual_seed(0)
    policy = load_model(tiny_model_dir)
    experience = make_experience(
        ROLLOUTS, [{}] * 8, policy, policy, None, None, 0, 1.0, 8, torch.device("cpu"), scores=SCORES
    )
    experience.engine_logprobs = (experience.old_logprobs - offset) * experience.response_mask
    compute_advantages(experience, 0.1, config)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
    return train_on(experience, policy, None, [optimizer], Accelerator(cpu=True), config, kl_coef=0.1)


@pytest.mark.slow
def test_two_processes_give_the_one_process_update_for_every_mode(tiny_model_dir, tmp_path):
    """The same 8 rollouts on one process and split over two (DDP over gloo, whole groups per
    rank, micro-batches of 2 sequences): every aggregation gives the same loss and weight change."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    script = [str(repo / "tests/scripts/ppo_update.py"), str(tiny_model_dir), str(tmp_path)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(repo / "scripts/accelerate/cpu_2proc.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in ([sys.executable, *script], [*launch, *script]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=repo, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    for mode in LOSS_AGGREGATIONS:
        one = torch.load(tmp_path / f"{mode}-rank0-of-1.pt")
        ranks = [torch.load(tmp_path / f"{mode}-rank{r}-of-2.pt") for r in (0, 1)]
        assert torch.equal(ranks[0]["delta"], ranks[1]["delta"]), mode  # DDP kept the replicas equal
        assert ((ranks[0]["delta"] - one["delta"]).norm() / one["delta"].norm()).item() < 1e-5, mode
        for key in ("policy_loss", "kl_loss", "entropy", "clip_fraction"):
            assert ranks[0]["stats"][key] == pytest.approx(one["stats"][key], rel=1e-5, abs=1e-9), (mode, key)
