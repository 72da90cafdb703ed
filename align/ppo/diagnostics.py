"""What a run logs to show reward hacking and collapse while it happens.

Per iteration, into metrics.jsonl and the trackers: the response-length distribution (a policy that
learned "longer scores more", or "stop at once", drifts to the cap or to 1 token), the engine/trainer
importance ratios and what the rollout correction did with them; and every `sample_log_every`
iterations a table of samples (prompt, response, reward parts, advantage, KL), because reading what
the policy writes shows a hack before any number does. The README's "Reading the run diagnostics
for reward hacking" says what each one looks like when the policy games the reward.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from align.ppo.losses import RolloutRatios

SAMPLES = "samples.jsonl"
SAMPLE_TEXT_CHARS = 300
"""Longer prompts and responses are cut in the TensorBoard table (samples.jsonl keeps them whole)."""


def length_stats(lengths: torch.Tensor, truncated: torch.Tensor) -> dict[str, float]:
    """Response lengths (tokens) of the whole batch: mean, min, max, median, 90th percentile
    (linear interpolation, as numpy.percentile), and the share cut off at max_new_tokens."""
    lengths = lengths.double()
    p50, p90 = torch.quantile(lengths, torch.tensor([0.5, 0.9], dtype=torch.float64, device=lengths.device))
    return {
        "response_length": lengths.mean().item(),
        "response_length/min": lengths.min().item(),
        "response_length/max": lengths.max().item(),
        "response_length/p50": p50.item(),
        "response_length/p90": p90.item(),
        "response_length/truncated_share": truncated.double().mean().item(),
    }


def rollout_ratio_stats(
    ratios: RolloutRatios,
    mode: str,
    all_sum: Callable[[torch.Tensor], torch.Tensor],
    gather: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """Mean, min and max of the raw trainer/engine ratios (per token, or per sequence for the
    sequence modes) over every process, and the share the correction truncated (`tis`) or dropped
    (`mask`)."""
    real = ratios.mask.bool()
    values = ratios.ratios[real]
    sums = all_sum(torch.stack([values.double().sum(), real.sum().double(), ratios.corrected.double().sum()]))
    extremes = torch.stack([values.min(), -values.max()]) if len(values) else torch.full((2,), torch.inf)
    low, neg_high = gather(extremes.to(sums.device).view(1, 2)).min(0).values.tolist()
    stats = {
        "rollout_correction/ratio_mean": (sums[0] / sums[1].clamp(min=1)).item(),
        "rollout_correction/ratio_min": low,
        "rollout_correction/ratio_max": -neg_high,
    }
    if mode.endswith("tis"):
        stats["rollout_correction/clipped_share"] = (sums[2] / sums[1].clamp(min=1)).item()
    elif mode.endswith("mask"):
        stats["rollout_correction/masked_share"] = (sums[2] / sums[1].clamp(min=1)).item()
    return stats


def prompt_text(record: dict) -> str:
    """The prompt's text: the last turn of a chat, or the plain prompt."""
    prompt = record.get("messages") or record["prompt"]
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def samples_markdown(iteration: int, rows: list[dict]) -> str:
    """A Markdown table of sample rows (TensorBoard's text panel renders it)."""
    keys = [k for k in rows[0] if k not in ("iteration", "prompt", "response")]
    cut = lambda text: text[:SAMPLE_TEXT_CHARS].replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        f"iteration {iteration}",
        "",
        "| prompt | response | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for row in rows:
        numbers = " | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        lines.append(f"| {cut(row['prompt'])} | {cut(row['response'])} | {numbers} |")
    return "\n".join(lines)


def append_samples(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
