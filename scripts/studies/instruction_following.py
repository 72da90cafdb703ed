"""How often fresh samples follow their constraints, per checkpoint, with standard errors.

    .venv/bin/python scripts/studies/instruction_following.py \
        --models base=runs/smollm2/base rlvr=runs/smollm2/rlvr/policy rlhf=runs/smollm2/rlhf/policy \
        [--sets trained=data/tasks/instructions/eval.jsonl unseen=data/tasks/instructions/eval_unseen.jsonl] \
        [--samples 2,4] [--out runs/smollm2/study]

Every checkpoint samples the same held-out prompts at T=1 (as in training) with one seed, on one
in-process vLLM engine whose weights are swapped between checkpoints. A sample counts when it
follows every constraint of its prompt (`rewards.constraints.follows_all`, the checkers PPO was
rewarded by). Samples of one prompt are not independent, so standard errors are over prompts:
the rate is the mean of per-prompt rates, its SE their standard deviation / sqrt(prompts); a
difference between two checkpoints is paired by prompt (same prompts), with its 95% interval
±1.96 SE. Per constraint type: the share of that type's constraints followed (instruction level).

Writes OUT/instruction_following.json and OUT/instruction_following.md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)  # run as a script: import the project, not this folder's neighbours
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def sample_set(engine, tokenizer, records: list[dict], samples: int, max_new_tokens: int, seed: int) -> dict:
    """Per-prompt follow rates and per-type instruction-level verdicts of one checkpoint."""
    from align.ppo.prompts import encode_prompt, prompt_messages
    from rewards.rules import correct_by_kind
    from rollouts.base import Sampling

    rollouts = engine.generate(
        [encode_prompt(tokenizer, r, 256) for r in records],
        Sampling(
            max_new_tokens=max_new_tokens,
            temperature=1.0,
            n=samples,
            seed=seed,
            stop_token_ids=(tokenizer.eos_token_id,),
        ),
    )
    per_prompt: list[list[bool]] = [[] for _ in records]
    by_type: dict[str, list[bool]] = {}
    for rollout in rollouts:
        messages = prompt_messages(records[rollout.prompt_index])
        verdicts = correct_by_kind(messages, rollout.text)
        per_prompt[rollout.prompt_index].append(all(verdicts.values()) if verdicts else False)
        for kind, followed in verdicts.items():
            by_type.setdefault(kind, []).append(followed)
    rates = [sum(p) / len(p) for p in per_prompt]
    return {
        "rates": rates,
        "rate": statistics.fmean(rates),
        "se": statistics.stdev(rates) / math.sqrt(len(rates)),
        "samples": len(rollouts),
        "by_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())},
        "length": statistics.fmean(len(r.token_ids) for r in rollouts),
    }


def paired_difference(after: list[float], before: list[float]) -> dict[str, float]:
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"diff": mean, "se": se, "ci95": [mean - 1.96 * se, mean + 1.96 * se]}


def markdown(results: dict, baseline: str) -> str:
    lines = []
    for name, by_model in results.items():
        lines += [
            f"### {name}",
            "",
            "| model | samples | follow all (±SE) | vs base (95% CI) | length |",
            "|---|---|---|---|---|",
        ]
        for model, r in by_model.items():
            vs = ""
            if model != baseline:
                d = r["vs_" + baseline]
                vs = f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            lines.append(
                f"| {model} | {r['samples']} | {r['rate']:.3f} ± {r['se']:.3f} | {vs} | {r['length']:.0f} |"
            )
        kinds = sorted({k for r in by_model.values() for k in r["by_type"]})
        lines += ["", "| type | " + " | ".join(by_model) + " |", "|---" * (len(by_model) + 1) + "|"]
        lines += [
            f"| {k} | "
            + " | ".join(f"{r['by_type'].get(k, float('nan')):.2f}" for r in by_model.values())
            + " |"
            for k in kinds
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="LABEL=DIR; the first is the baseline")
    parser.add_argument(
        "--sets",
        nargs="+",
        default=[
            "trained=data/tasks/instructions/eval.jsonl",
            "unseen=data/tasks/instructions/eval_unseen.jsonl",
        ],
        help="NAME=JSONL of held-out prompts",
    )
    parser.add_argument("--samples", default="2,4", help="samples per prompt, one per set (comma-separated)")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--out", type=Path, default=REPO / "runs/smollm2/study")
    args = parser.parse_args()

    from align.models import load_model, load_tokenizer
    from align.ppo.prompts import read_prompts
    from rollouts.factory import EngineConfig, build_engine

    models, sets = pairs(args.models), pairs(args.sets)
    samples = [int(n) for n in args.samples.split(",")]
    if len(samples) != len(sets):
        parser.error("--samples: give one count per set")
    baseline = next(iter(models))
    tokenizer = load_tokenizer(models[baseline])
    engine = build_engine(
        EngineConfig(
            kind="vllm", max_model_len=512, kv_cache_gib=2, seed=args.seed, num_threads=args.num_threads
        ),
        models[baseline],
    )
    results: dict[str, dict[str, dict]] = {name: {} for name in sets}
    try:
        for label, directory in models.items():
            if label != baseline:
                engine.load_weights(load_model(directory).named_parameters())
            for (name, path), n in zip(sets.items(), samples, strict=True):
                result = sample_set(
                    engine, tokenizer, read_prompts(Path(path)), n, args.max_new_tokens, args.seed
                )
                results[name][label] = result
                print(
                    f"{name} {label}: {result['rate']:.3f} ± {result['se']:.3f} ({result['samples']} samples)",
                    flush=True,
                )
    finally:
        engine.close()
    for by_model in results.values():
        for label, r in by_model.items():
            if label != baseline:
                r["vs_" + baseline] = paired_difference(r["rates"], by_model[baseline]["rates"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instruction_following.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    table = markdown(results, baseline)
    (args.out / "instruction_following.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
