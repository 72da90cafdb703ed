"""How many labels the reward model needs: the RM's least-sure pairs (`--select uncertain`) against
random comparisons, on the demo task, with the programmatic judge as the labeller.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/active_selection.py \
        [--seeds 3] [--budgets 50 100 200 400] [--pool 1700] [--held_out 300] [--targets 0.7 0.75 0.8 0.85 0.9] \
        [--out runs/active-selection] [--image docs/images/active-selection.png]

The demo task's bundled candidate sets (`data/tasks/candidates.jsonl`: the 2,000 prompts with k = 4
replies each, as the demo's `align label add` samples 4: right, wrong, rude, rambling, made-up
claims, other language, harmful compliance; not its two-reply near-miss sets) are split by prompt
into a pool to label and held-out prompts. Every pair of the held-out replies is labelled by the judge and exported,
which gives the held-out preference pairs every reward model is scored on (pairwise accuracy).

Per seed and selection mode, labels are bought in rounds up to each budget, through the real
stages: `align label add` (random: `--budget N`; uncertain: `--select uncertain --reward_model
<the last round's RM> --budget N`), `align label judge`, `align label export`, then `align rm`
from the same base on all labels so far. Both modes start from the same random first round (the
uncertain mode needs a model to be unsure with). A label is one judged comparison, decided or
not: a tie teaches the RM nothing but costs a labeller as much.

The reward model is the tests' tiny Llama (~1M parameters, a 2k BPE vocabulary trained on the
pool's text), randomly initialised: no pretraining, so what it learns in a few hundred pairs is
surface signal (rude words, made-up claims, refusals, length), not arithmetic.

Writes OUT/results.csv (one row per seed, mode and budget), OUT/active_selection.md (held-out
accuracy mean ± SE over seeds per budget and mode, and the labels each mode needs to reach
each of `--targets`) and the curve to `--image`; prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import shutil
import statistics
import sys
import time
from itertools import combinations
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)  # run as a script: import the project, not this folder's neighbours

MODES = ("random", "uncertain")


def split_candidates(out: Path, pool_size: int, held_out_size: int) -> tuple[Path, list[dict]]:
    """Shuffle the bundled candidates by prompt (seed 0): the pool file, and the held-out rows."""
    rows = [json.loads(line) for line in (REPO / "data/tasks/candidates.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if len(r["responses"]) == 4]  # not the two-reply near-miss sets
    random.Random(0).shuffle(rows)
    held_out, pool = rows[:held_out_size], rows[held_out_size : held_out_size + pool_size]
    path = out / "pool.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool), encoding="utf-8")
    return path, held_out


def build_base(out: Path, pool: Path) -> Path:
    """The tiny Llama with a BPE vocabulary trained on the pool's text, as the tests build theirs."""
    from align.models import build_model, train_tokenizer

    base = out / "base"
    if (base / "config.json").exists():
        return base
    texts = []
    for line in pool.open(encoding="utf-8"):
        row = json.loads(line)
        texts += [m["content"] for m in row["prompt"]] if isinstance(row["prompt"], list) else [row["prompt"]]
        texts += [r if isinstance(r, str) else r["text"] for r in row["responses"]]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    model = build_model("tiny", tokenizer, seed=0, max_position_embeddings=512)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


def held_out_pairs(out: Path, held_out: list[dict]) -> Path:
    """Every pair of the held-out prompts' replies, labelled by the judge and exported."""
    from rewards.judge import judge_store
    from rewards.label_config import LabelAddConfig, LabelExportConfig, LabelJudgeConfig
    from rewards.store_io import add_to_store, export_preferences

    path = out / "held_out.jsonl"
    if path.exists():
        return path
    pairs = out / "held_out_candidates.jsonl"
    with pairs.open("w", encoding="utf-8") as f:
        for row in held_out:
            for a, b in combinations(row["responses"], 2):
                if a != b:
                    f.write(
                        json.dumps({"prompt": row["prompt"], "responses": [a, b]}, ensure_ascii=False) + "\n"
                    )
    store = f"sqlite:///{out / 'held_out.sqlite'}"
    add_to_store(LabelAddConfig(store=store, jsonl=pairs))
    judge_store(LabelJudgeConfig(store=store))
    return export_preferences(LabelExportConfig(store=store, output=path))


def train_rm(
    base: Path, train_file: Path, held_out: Path, output_dir: Path, seed: int, epochs: float
) -> dict:
    from rewards.reward_config import RewardStageConfig
    from rewards.train import run_reward_training

    if not (output_dir / "rm_metrics.json").exists():
        run_reward_training(
            RewardStageConfig(
                model=base,
                train_file=train_file,
                eval_file=held_out,
                output_dir=output_dir,
                max_length=256,
                truncate=True,
                batch_size=16,
                epochs=epochs,
                learning_rate=1e-3,
                use_margin=False,
                eval_steps=100_000,
                save_steps=100_000,
                logging_steps=100_000,
                resume=False,
                seed=seed,
            )
        )
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    return json.loads((output_dir / "rm_metrics.json").read_text())


def run_mode(
    args, base: Path, pool: Path, held_out: Path, seed: int, mode: str, first: dict | None
) -> list[dict]:
    """One selection mode's rounds for one seed; `first`: the random mode's first round (its row and
    reward model), which the uncertain mode shares."""
    from rewards.judge import judge_store
    from rewards.label_config import LabelAddConfig, LabelExportConfig, LabelJudgeConfig
    from rewards.store_io import add_to_store, export_preferences

    work = args.out / f"seed-{seed}" / mode
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'labels.sqlite'}"
    rows, previous_rm, labelled = [], None, 0
    for n, budget in enumerate(args.budgets):
        started = time.perf_counter()
        select = "uncertain" if mode == "uncertain" and previous_rm is not None else "random"
        add_to_store(
            LabelAddConfig(
                store=store,
                jsonl=pool,
                select=select,
                reward_model=previous_rm if select == "uncertain" else None,
                budget=budget - labelled,
                seed=seed,
            )
        )
        judge_store(LabelJudgeConfig(store=store))
        labelled = budget
        if n == 0 and first is not None:
            # The random mode's first round, relabelled here (the same seed draws the same
            # comparisons): its reward model is the same too, so it is not trained twice.
            rows.append({**first["row"], "mode": mode})
            previous_rm = first["rm"]
            continue
        prefs = export_preferences(
            LabelExportConfig(store=store, output=work / f"preferences-{budget}.jsonl")
        )
        metrics = train_rm(base, prefs, held_out, work / f"rm-{budget}", seed, args.epochs)
        previous_rm = work / f"rm-{budget}"
        rows.append(
            {
                "seed": seed,
                "mode": mode,
                "labels": budget,
                "decided_pairs": metrics["train_pairs"],
                "held_out_pairs": metrics["eval_pairs"],
                "accuracy": metrics["accuracy"]["overall"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        logging.getLogger("study").warning("%s", rows[-1])
    return rows


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def labels_to_reach(budgets: list[int], accuracies: list[float], target: float) -> float | None:
    """Labels at which a curve first reaches `target`, linearly interpolated between budgets."""
    for n, (budget, accuracy) in enumerate(zip(budgets, accuracies, strict=True)):
        if accuracy >= target:
            if n == 0:
                return float(budget)
            b0, a0 = budgets[n - 1], accuracies[n - 1]
            return b0 + (target - a0) / (accuracy - a0) * (budget - b0)
    return None


def summarise(rows: list[dict], budgets: list[int], targets: list[float], seeds: int) -> str:
    lines = [
        f"Held-out pairwise accuracy of the reward model (mean ± SE over {seeds} seeds) by labels "
        "bought, and the decided (non-tie) pairs among them:",
        "",
        "| labels | random: accuracy | random: decided | uncertain: accuracy | uncertain: decided |",
        "|---|---|---|---|---|",
    ]
    curves: dict[str, list[float]] = {m: [] for m in MODES}
    for budget in budgets:
        cells = [str(budget)]
        for mode in MODES:
            at = [r for r in rows if r["mode"] == mode and r["labels"] == budget]
            accuracy, se = mean_se([r["accuracy"] for r in at])
            decided, _ = mean_se([r["decided_pairs"] for r in at])
            curves[mode].append(accuracy)
            cells += [f"{accuracy:.3f} ± {se:.3f}", f"{decided:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"n = {rows[0]['held_out_pairs']} held-out pairs per model.", "", "Labels to reach:", ""]
    for target in targets:
        for mode in MODES:
            mean_curve = labels_to_reach(budgets, curves[mode], target)
            per_seed = []
            for seed in sorted({r["seed"] for r in rows}):
                curve = {r["labels"]: r["accuracy"] for r in rows if (r["mode"], r["seed"]) == (mode, seed)}
                per_seed.append(labels_to_reach(budgets, [curve[b] for b in budgets], target))
            reached = [x for x in per_seed if x is not None]
            text = (
                f"~{mean_curve:.0f} on the mean curve" if mean_curve is not None else f"not by {budgets[-1]}"
            )
            at = f" (at {', '.join(f'{x:.0f}' for x in reached)})" if reached else ""
            lines.append(
                f"- accuracy {target:.2f}, {mode}: {text}; {len(reached)} of {len(per_seed)} seeds{at}"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], budgets: list[int], targets: list[float], image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in MODES:
        stats = [
            mean_se([r["accuracy"] for r in rows if r["mode"] == mode and r["labels"] == b]) for b in budgets
        ]
        ax.errorbar(
            budgets, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=mode
        )
    means = [m for line in ax.get_lines() for m in line.get_ydata()]
    for target in targets:
        if min(means) - 0.02 <= target <= max(means) + 0.03:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labels (judged comparisons)")
    ax.set_ylabel("held-out pairwise accuracy")
    seeds = len({r["seed"] for r in rows})
    ax.set_title(f"RM accuracy by labels, uncertain vs random ({seeds} seeds, ± SE)")
    ax.legend()
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--pool", type=int, default=1700, help="prompts to select from")
    parser.add_argument("--held_out", type=int, default=300, help="held-out prompts (all their pairs)")
    parser.add_argument("--epochs", type=float, default=8.0, help="RM epochs over the labels so far")
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.7, 0.75, 0.8, 0.85, 0.9], help="accuracies to reach"
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs/active-selection")
    parser.add_argument("--image", type=Path, default=REPO / "docs/images/active-selection.png")
    parser.add_argument(
        "--replot", action="store_true", help="only the table and curve, from OUT/results.csv"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    if args.replot:
        with (args.out / "results.csv").open(encoding="utf-8") as f:
            rows = [
                {
                    k: float(v) if k in ("accuracy", "seconds") else v if k == "mode" else int(v)
                    for k, v in r.items()
                }
                for r in csv.DictReader(f)
            ]
    else:
        rows = run_study(args)
    report(rows, args)


def run_study(args) -> list[dict]:
    """Every seed's rounds in both modes; writes OUT/results.csv."""
    args.out.mkdir(parents=True, exist_ok=True)
    pool, held_out_rows = split_candidates(args.out, args.pool, args.held_out)
    base = build_base(args.out, pool)
    held_out = held_out_pairs(args.out, held_out_rows)
    rows = []
    for seed in range(args.seeds):
        random_rows = run_mode(args, base, pool, held_out, seed, "random", None)
        first_dir = args.out / f"seed-{seed}" / "random"
        first = {"rm": first_dir / f"rm-{args.budgets[0]}", "row": random_rows[0]}
        rows += random_rows + run_mode(args, base, pool, held_out, seed, "uncertain", first)
    with (args.out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def report(rows: list[dict], args) -> None:
    """OUT/active_selection.md and the curve, from the rows; prints the table."""
    seeds = len({r["seed"] for r in rows})
    table = summarise(rows, args.budgets, args.targets, seeds)
    # The uncertain mode's first row is the random mode's: one reward model, counted once.
    trained = [r for r in rows if not (r["mode"] == "uncertain" and r["labels"] == args.budgets[0])]
    minutes = sum(r["seconds"] for r in trained) / 60
    table += f"\n{len(trained)} reward models, {minutes:.1f} min of labelling and training in all.\n"
    (args.out / "active_selection.md").write_text(table, encoding="utf-8")
    plot(rows, args.budgets, args.targets, args.image)
    print(table)


if __name__ == "__main__":
    main()
