"""PPO's curves: reward and KL per iteration, and held-out quality where the run measured it."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics_path: Path, out: Path, quality_path: Path | None = None) -> None:
    """reward_mean and KL per iteration, one PNG; with `eval_every`, a third panel of held-out
    correctness (and RM score, right axis), the reference's from `quality_path` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    steps = [r["iteration"] for r in rows]
    evaluated = [r for r in rows if "eval/correct" in r]
    fig, axes = plt.subplots(3 if evaluated else 2, 1, figsize=(7, 9 if evaluated else 6), sharex=True)
    axes[0].plot(steps, [r["reward_mean"] for r in rows])
    axes[0].set_ylabel("mean reward")
    axes[1].plot(steps, [r["kl"] for r in rows], color="tab:red")
    axes[1].set_ylabel("KL to reference")
    if evaluated:
        held_out = axes[2]
        at = [r["iteration"] for r in evaluated]
        held_out.plot(at, [r["eval/correct"] for r in evaluated], "o-", color="tab:green")
        held_out.set_ylabel("held-out correctness", color="tab:green")
        reference = None
        if quality_path is not None and quality_path.is_file():
            reference = json.loads(quality_path.read_text(encoding="utf-8"))["reference"]
            held_out.axhline(reference["correct"], color="tab:green", linestyle="--")
        if "eval/reward_mean" in evaluated[0]:
            rm_axis = held_out.twinx()
            rm_axis.plot(at, [r["eval/reward_mean"] for r in evaluated], "s-", color="tab:purple")
            rm_axis.set_ylabel("held-out RM score", color="tab:purple")
            if reference is not None and "reward_mean" in reference:
                rm_axis.axhline(reference["reward_mean"], color="tab:purple", linestyle="--")
    axes[-1].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
