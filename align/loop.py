"""`align loop`: rounds of RLHF as one command, each round in its own directory.

Round N, in `<output_dir>/round-N/`:
1. Samples: `align label add` gives round N's prompts (`prompts.jsonl`, the N-th slice of
   `prompts`) k candidates each from the current policy (round 1: `policy`; then the policy the
   round before trained) and queues them in the store (`label_add.select`: at random, or the pairs
   the last round's reward model is least sure about).
2. Labels: `align label judge` (labeller `judge`), or people in `align label serve` (labeller
   `people`: while any assignment is pending the loop stops here and says so; run it again when
   they are done).
3. `align label export` of every label so far, split by a hash of each pair into the reward
   model's training and held-out pairs (`rm_train.jsonl`, `rm_held_out.jsonl`): the held-out side
   grows with the rounds and a pair never changes side. When these pairs differ from the ones the
   round's reward model last trained on (`split.json`), steps 4 and 5 start over.
4. `align rm` from the previous round's reward model (`rm_init: previous`) or the starting policy.
5. `align ppo` from the current policy against that reward model, the KL to the starting policy,
   which ends by scoring the starting policy and the new one on fresh samples of `eval_prompts`
   (`ppo/quality.json`: the reward model's mean score, the rule/checker rate); or `align dpo` on
   the same pairs (its reference: the round's starting policy), scored here the same way
   (`quality.json`).
Then `round.json`, and the table of every round so far: `loop.json`, `loop.md`.

The stages run as their own processes through `align pipeline` on the round's recipe
(`round-N/recipe.yaml`), so a stage's memory and vLLM engine go with it, and a finished stage
leaves its marker in `round-N/.pipeline/`: running the loop again skips a finished round (its
`round.json`) whole and a finished stage of an unfinished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import yaml

from align.errors import InputError
from align.loop_config import LoopConfig
from align.pipeline import PipelineConfig, discard_checkpoints, run_pipeline
from align.records import jsonl_objects

log = logging.getLogger(__name__)

ROUND_DONE = "round.json"


def round_dir(config: LoopConfig, n: int) -> Path:
    return Path(config.output_dir) / f"round-{n}"


def write_round_prompts(config: LoopConfig, n: int, path: Path) -> None:
    """Round n's slice of `prompts` (the n-th `prompts_per_round`, wrapping around the file)."""
    rows = [row for _, row in jsonl_objects(config.prompts)]
    if not rows:
        raise InputError(f"{config.prompts}: no prompts")
    start = (n - 1) * config.prompts_per_round
    picked = [rows[(start + i) % len(rows)] for i in range(config.prompts_per_round)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")


def update_dir(config: LoopConfig, n: int) -> Path:
    """Where round n's update writes; its policy is `policy_of(config, n)`."""
    return round_dir(config, n) / config.update


def policy_of(config: LoopConfig, n: int) -> Path:
    """The policy round n starts from: the starting policy, or the one round n - 1 trained."""
    if n == 1:
        return Path(config.policy)
    previous = update_dir(config, n - 1)
    return previous / "policy" if config.update == "ppo" else previous


def round_recipe(config: LoopConfig, n: int) -> dict[str, Any]:
    """Round n's stages as a multi-stage recipe: the per-round settings plus the paths that chain
    the round's stages (and this round to the one before)."""
    here = round_dir(config, n)
    policy = policy_of(config, n)
    previous_rm = round_dir(config, n - 1) / "rm" if n > 1 else None
    store = config.store_url
    add = {"seed": config.seed + n - 1, **config.label_add}
    add |= {"store": store, "prompts": str(here / "prompts.jsonl"), "checkpoints": [str(policy)]}
    if add.get("select") == "uncertain":
        if previous_rm is None:
            log.info("round 1: no reward model to be unsure with yet; its comparisons are queued at random")
            add["select"] = "random"
        else:
            add["reward_model"] = str(previous_rm)
    rm_start = previous_rm if config.rm_init == "previous" and previous_rm is not None else config.policy
    stages = ["label add", *(["label judge"] if config.labeller == "judge" else []), "rm", config.update]
    recipe: dict[str, Any] = {
        "run_dir": str(here),
        "pipeline": {"stages": stages},
        "label-add": add,
        "label-judge": {**config.label_judge, "store": store},
        "rm": {
            **config.rm,
            "model": str(rm_start),
            "train_file": str(here / "rm_train.jsonl"),
            "eval_file": str(here / "rm_held_out.jsonl"),
            "output_dir": str(here / "rm"),
        },
    }
    if config.update == "ppo":
        recipe["ppo"] = {
            "prompts": str(config.prompts),
            "reference": str(config.policy),
            "seed": config.seed + n - 1,
            **config.ppo,
            "policy": str(policy),
            "reward_model": str(here / "rm"),
            "eval_prompts": str(config.eval_prompts),
            "eval_limit": config.eval_limit,
            "eval_samples_per_prompt": config.eval_samples_per_prompt,
            "output_dir": str(update_dir(config, n)),
        }
    else:
        recipe["dpo"] = {
            "seed": config.seed + n - 1,
            **config.dpo,
            "model": str(policy),
            "train_file": str(here / "rm_train.jsonl"),
            "eval_file": str(here / "rm_held_out.jsonl"),
            "output_dir": str(update_dir(config, n)),
        }
    return recipe


def held_out(row: dict[str, Any], fraction: float) -> bool:
    """Whether a preference pair is held out: by a hash of the prompt and the two replies (in
    either order), so it lands on the same side in every round."""
    from rewards.train import normalise, pair_key

    digest = hashlib.sha256(pair_key(normalise(row)).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12 < fraction


def export_and_split(config: LoopConfig, here: Path) -> tuple[int, int]:
    """`align label export` of every label so far, split into the reward model's training and
    held-out pairs; returns their counts."""
    from rewards.label_config import LabelExportConfig
    from rewards.store_io import export_preferences

    exported = export_preferences(
        LabelExportConfig(
            **{**config.label_export, "store": config.store_url, "output": here / "preferences.jsonl"}
        )
    )
    rows = [row for _, row in jsonl_objects(exported)]
    sides: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for row in rows:
        sides[held_out(row, config.rm_eval_fraction)].append(row)
    if not sides[True] or not sides[False]:
        raise InputError(
            f"{exported}: {len(rows)} labelled pairs give {len(sides[False])} to train the reward model "
            f"on and {len(sides[True])} to hold out; label more (prompts_per_round, label_add.k) or "
            "change rm_eval_fraction"
        )
    for name, side in (("rm_train.jsonl", False), ("rm_held_out.jsonl", True)):
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in sides[side])
        (here / name).write_text(text, encoding="utf-8")
    return len(sides[False]), len(sides[True])


def split_changed(here: Path) -> bool:
    """Whether the reward model's pairs differ from those its last run in this round started on
    (recorded in `split.json`, which now holds the new ones)."""
    digest = {
        name: hashlib.sha256((here / name).read_bytes()).hexdigest()
        for name in ("rm_train.jsonl", "rm_held_out.jsonl")
    }
    record = here / "split.json"
    before = json.loads(record.read_text()) if record.exists() else None
    record.write_text(json.dumps(digest), encoding="utf-8")
    return before is not None and before != digest


def store_counts(url: str) -> dict[str, int]:
    """Comparisons, labels and pending assignments in the store."""
    from rewards.store import PreferenceStore

    store = PreferenceStore(url, create=False)
    try:
        people = store.annotators()
        return {
            "comparisons": store.comparison_count(),
            "labels": len(store.labels()) + len(store.rankings()),
            "pending": sum(store.progress(name)[1] for name in people),
            "annotators": len(people),
        }
    finally:
        store.close()


def score_dpo_round(config: LoopConfig, n: int) -> None:
    """The starting policy and round n's DPO policy on fresh samples of `eval_prompts`, scored by
    round n's reward model and the rules, as `align ppo` writes its `quality.json`."""
    from align.ppo.evaluate import sample_quality

    here = round_dir(config, n)
    sampling = {
        "max_new_tokens": int(config.label_add.get("max_new_tokens", 64)),
        "samples_per_prompt": config.eval_samples_per_prompt,
        "seed": config.seed + 1,
    }
    quality = {
        side: sample_quality(policy, config.eval_prompts, here / "rm", config.eval_limit, **sampling)
        for side, policy in (("reference", Path(config.policy)), ("policy", update_dir(config, n)))
    }
    (here / "quality.json").write_text(
        json.dumps({**quality, "prompts": config.eval_limit, **sampling}, indent=2)
    )


def round_row(config: LoopConfig, n: int, counts: dict[str, int], seconds: float) -> dict[str, Any]:
    """Round n's line of the table, from what its stages wrote."""
    here = round_dir(config, n)
    rm = json.loads((here / "rm" / "rm_metrics.json").read_text())
    quality_file = here / "ppo" / "quality.json" if config.update == "ppo" else here / "quality.json"
    quality = json.loads(quality_file.read_text())
    start, policy = quality["reference"], quality["policy"]
    accuracy, pairs = rm["accuracy"]["overall"], rm["eval_pairs"]
    correct, judged = policy["correct"], policy["judged"]
    return {
        "round": n,
        "policy_sampled": str(policy_of(config, n)),
        "comparisons": counts["comparisons"],
        "labels": counts["labels"],
        "rm_train_pairs": rm["train_pairs"],
        "rm_held_out_pairs": pairs,
        "rm_accuracy_before": rm["accuracy_before"]["overall"],
        "rm_accuracy": accuracy,
        "rm_accuracy_se": round(math.sqrt(accuracy * (1 - accuracy) / pairs), 4),
        "start_rm_score": start.get("reward_mean"),
        "policy_rm_score": policy.get("reward_mean"),
        "start_correct": start["correct"],
        "policy_correct": correct,
        "policy_correct_se": round(math.sqrt(correct * (1 - correct) / judged), 4) if judged else None,
        "eval_samples": policy["samples"],
        "minutes": round(seconds / 60, 1),
    }


def write_table(config: LoopConfig) -> list[dict[str, Any]]:
    """`loop.json` and `loop.md` from every finished round's `round.json`."""
    rows = []
    for n in range(1, config.rounds + 1):
        done = round_dir(config, n) / ROUND_DONE
        if done.exists():
            rows.append(json.loads(done.read_text()))
    out = Path(config.output_dir)
    (out / "loop.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    lines = [
        f"Per round: the labels in the store so far, the reward model's held-out pairwise accuracy "
        f"(before training = the model it started from; ± SE over n held-out pairs), and fresh samples "
        f"on held-out prompts (`{config.eval_prompts}`) of the starting policy and the round's policy "
        f"({config.update}): the round's reward model's mean score and the rule/checker rate (± SE over samples).",
        "",
        "| round | labels | RM pairs train / held-out | RM accuracy before → after | RM score start → policy "
        "| checker rate start → policy | minutes |",
        "|---|---|---|---|---|---|---|",
    ]

    def score(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    for r in rows:
        se = f" ± {r['policy_correct_se']:.3f}" if r["policy_correct_se"] is not None else ""
        lines.append(
            f"| {r['round']} | {r['labels']} | {r['rm_train_pairs']} / {r['rm_held_out_pairs']} "
            f"| {r['rm_accuracy_before']:.3f} → {r['rm_accuracy']:.3f} ± {r['rm_accuracy_se']:.3f} "
            f"| {score(r['start_rm_score'])} → {score(r['policy_rm_score'])} "
            f"| {r['start_correct']:.3f} → {r['policy_correct']:.3f}{se} (n={r['eval_samples']}) | {r['minutes']} |"
        )
    (out / "loop.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def stage_seconds(here: Path) -> float:
    """Seconds the round's finished stages took, from their pipeline markers."""
    total = 0.0
    for marker in (here / ".pipeline").glob("*.done"):
        try:
            total += float(json.loads(marker.read_text()).get("seconds", 0.0))
        except (ValueError, AttributeError):
            continue
    return total


def run_round(config: LoopConfig, n: int) -> bool:
    """Run (or finish) round n; False when it waits for people's labels."""
    here = round_dir(config, n)
    here.mkdir(parents=True, exist_ok=True)
    prompts = here / "prompts.jsonl"
    if not prompts.exists():
        write_round_prompts(config, n, prompts)
    recipe = here / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(round_recipe(config, n), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )

    def stages(*names: str) -> None:
        run_pipeline(
            PipelineConfig(recipe=recipe, only=list(names), accelerate_config=config.accelerate_config)
        )

    log.info("round %d/%d: samples of %s", n, config.rounds, policy_of(config, n))
    stages("label add", *(["label judge"] if config.labeller == "judge" else []))
    counts = store_counts(config.store_url)
    if config.labeller == "people":
        if not counts["annotators"]:
            raise InputError(
                f"labeller people: the store {config.store_url} has no annotators; add them with "
                "label_add.annotators (a JSONL of {name, password, role})"
            )
        if counts["pending"]:
            log.warning(
                "round %d: %d comparisons wait for labels. Label them in the app (align label serve "
                "--store %s), then run this `align loop` again to continue.",
                n,
                counts["pending"],
                config.store_url,
            )
            return False
    started = time.time()  # the stages' own times are in their markers; this counts the rest
    train, held = export_and_split(config, here)
    outside_stages = time.time() - started
    log.info("round %d: %d labelled pairs to train on, %d held out", n, train, held)
    if split_changed(here):
        # More labels since (people labelled more), or another `rm_eval_fraction`: the training
        # stages' configs name the same files, so the pipeline would take them for done.
        log.info("round %d: the labelled pairs changed since its reward model trained; training again", n)
        for stage in ("rm", config.update):
            discard_checkpoints(round_recipe(config, n), stage)
            (here / ".pipeline" / f"{stage}.done").unlink(missing_ok=True)
        (here / "quality.json").unlink(missing_ok=True)
    stages("rm", config.update)
    if config.update == "dpo" and not (here / "quality.json").exists():
        started = time.time()
        score_dpo_round(config, n)
        outside_stages += time.time() - started
    row = round_row(config, n, counts, stage_seconds(here) + outside_stages)
    (here / ROUND_DONE).write_text(json.dumps(row, indent=2), encoding="utf-8")
    return True


def run_loop(config: LoopConfig) -> Path:
    """Run the rounds not finished yet; returns the table (`loop.md`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for n in range(1, config.rounds + 1):
        if (round_dir(config, n) / ROUND_DONE).exists():
            log.info("round %d/%d: finished earlier, skipped", n, config.rounds)
            continue
        if not run_round(config, n):
            break
        write_table(config)
    rows = write_table(config)
    log.info("%d of %d rounds finished; table in %s", len(rows), config.rounds, out / "loop.md")
    return out / "loop.md"
