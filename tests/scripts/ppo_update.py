"""One PPO update (`align.ppo.iteration.train_on`) of a fixed batch of 8 rollouts, split over the
processes of the launch (whole groups per rank), for every loss aggregation: each rank writes the
weight change and the update's statistics (`test_ppo_loss_aggregation.py` compares 1 and 2 ranks)."""

import sys
from pathlib import Path

import torch

from align.distributed import make_accelerator
from align.models import load_model
from align.ppo.config import LOSS_AGGREGATIONS, PPOConfig
from align.ppo.experience import make_experience
from align.ppo.iteration import compute_advantages, train_on
from rollouts.base import Rollout

RESPONSES = [
    [10, 11, 12, 13, 14, 15, 16],
    [10],
    [11, 12, 13],
    [12, 14],
    [20, 21, 22, 23, 24],
    [30, 31],
    [40],
    [50, 51],
]
PROMPTS = [[5, 6, 7, 8, 9], [5, 6], [7, 8, 9], [5], [9, 8, 7, 6], [6, 7], [8], [5, 9, 6]]
SCORES = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 0.0, 3.0, 1.0])


def main(model_dir: str, out_dir: str) -> None:
    accelerator = make_accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    rows = range(rank * 8 // world, (rank + 1) * 8 // world)  # whole groups of 2 on each rank
    rollouts = [Rollout(0, PROMPTS[i], RESPONSES[i], "", None, "stop") for i in rows]
    for mode in LOSS_AGGREGATIONS:
        config = PPOConfig(
            policy=Path(model_dir),
            output_dir=Path(out_dir) / "unused",
            prompts=Path(__file__),
            reward_rule="is_correct",
            advantage="rloo",
            samples_per_prompt=2,
            kl_penalty="loss",
            entropy_coef=0.01,
            loss_aggregation=mode,
            rollout_correction="token_tis",
            ppo_epochs=1,
            minibatch_size=8 // world,
            micro_batch_size=2,
            max_grad_norm=0.0,
        )
        policy, reference = load_model(model_dir), load_model(model_dir).eval()
        noise = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for param in reference.parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=noise))
        before = [p.detach().clone() for p in policy.parameters()]
        optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
        policy, optimizer = accelerator.prepare(policy, optimizer)
        experience = make_experience(
            rollouts, [{}] * len(rollouts), policy, reference, None, None, 0, 1.0, 8, accelerator.device,
            scores=SCORES[rows.start : rows.stop],
        )  # fmt: skip
        engine_noise = 0.3 * torch.randn(8, 7, generator=torch.Generator().manual_seed(2))
        width = experience.response_mask.shape[1]
        experience.engine_logprobs = (
            experience.old_logprobs + engine_noise[rows.start : rows.stop, :width]
        ) * experience.response_mask
        compute_advantages(experience, 0.1, config, lambda t: accelerator.reduce(t, reduction="sum"))
        stats = train_on(experience, policy, None, [optimizer], accelerator, config, kl_coef=0.1)
        after = accelerator.unwrap_model(policy).parameters()
        delta = torch.cat([(a.detach() - b).flatten() for a, b in zip(after, before, strict=True)])
        torch.save({"stats": stats, "delta": delta}, Path(out_dir) / f"{mode}-rank{rank}-of-{world}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
