"""`align dpo`: offline preference optimisation with TRL: DPO and its losses, KTO, ORPO, SimPO.

Build (tokenizer, checked rows held out as `align rm` holds them out, the method's TRL trainer
with the policy and its reference), score the held-out pairs with the starting model, train
(resuming from the last checkpoint), score them again, save the policy at `output_dir` with
`dpo_metrics.json` and `eval.json` (held-out implicit-reward pairwise accuracy, n, SE).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from align.dpo_config import DPOStageConfig
from align.errors import InputError
from align.finite import FiniteGradients
from align.models import load_tokenizer, save_trained
from align.records import check_lengths, load_splits
from rewards.train import as_messages, check_preference, normalise, pair_key, pair_length

log = logging.getLogger(__name__)


def check_unpaired(row: dict[str, Any]) -> str | None:
    """What is wrong with an unpaired row (`prompt`, `completion`, boolean `label`), or None."""
    missing = [k for k in ("prompt", "completion", "label") if k not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)} (fields: {', '.join(sorted(row)) or 'none'})"
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        if as_messages(row[key], role) is None:
            return f"'{key}' is empty or not a string / list of messages"
    if not isinstance(row["label"], bool):
        return f"label {row['label']!r} must be true (a good reply) or false"
    return None


def is_unpaired(row: dict[str, Any]) -> bool:
    """A row is unpaired when it has a `completion` or a `label` and no `chosen`."""
    return "chosen" not in row and ("completion" in row or "label" in row)


def check_row(row: dict[str, Any]) -> str | None:
    """A preference pair (the rule of `align rm`) or an unpaired row, by its fields."""
    return check_unpaired(row) if is_unpaired(row) else check_preference(row)


def normalise_unpaired(row: dict[str, Any]) -> dict[str, Any]:
    """A checked unpaired row in conversational form."""
    return {
        "prompt": as_messages(row["prompt"], "user"),
        "completion": as_messages(row["completion"], "assistant"),
        "label": row["label"],
    }


def split_key(row: dict[str, Any]) -> str:
    """Rows held out together: copies of a pair (`rewards.train.pair_key`, so a paired file is split
    exactly as `align rm` splits it), or all unpaired rows of one prompt."""
    if is_unpaired(row):
        return json.dumps(normalise_unpaired(row)["prompt"], sort_keys=True)
    return pair_key(normalise(row))


def read_one_kind(rows: list[dict[str, Any]], path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The normalised rows of one file and whether they are unpaired; a file mixing kinds is refused."""
    unpaired = [is_unpaired(r) for r in rows]
    if any(unpaired) and not all(unpaired):
        raise InputError(
            f"{path}: mixes preference pairs (prompt, chosen, rejected) and unpaired rows (prompt, "
            "completion, label); give one kind per file"
        )
    if all(unpaired):
        return [normalise_unpaired(r) for r in rows], True
    return [normalise(r) for r in rows], False


def pairs_of(rows: list[dict[str, Any]], unpaired: bool) -> list[dict[str, Any]]:
    """Preference pairs: the rows themselves, or for unpaired rows every good reply of a prompt
    against every bad reply of the same prompt."""
    if not unpaired:
        return rows
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_prompt.setdefault(json.dumps(row["prompt"], sort_keys=True), []).append(row)
    return [
        {"prompt": good["prompt"], "chosen": good["completion"], "rejected": bad["completion"]}
        for group in by_prompt.values()
        for good in group
        if good["label"]
        for bad in group
        if not bad["label"]
    ]


def load_data(config: DPOStageConfig) -> tuple[list[dict[str, Any]], bool, list[dict[str, Any]]]:
    """The training rows, whether they are unpaired, and the held-out pairs."""
    train, held_out = load_splits(
        config.train_file,
        config.eval_file,
        config.eval_fraction,
        config.seed,
        check_row,
        config.max_bad_fraction,
        group=split_key,
    )
    train, unpaired = read_one_kind(train, config.train_file)
    held_out, held_out_unpaired = read_one_kind(held_out, config.eval_file or config.train_file)
    if unpaired and config.method != "kto":
        raise InputError(
            f"{config.train_file}: unpaired rows (prompt, completion, label) train only method: kto; "
            f"{config.method} needs pairs (prompt, chosen, rejected)"
        )
    pairs = pairs_of(held_out, held_out_unpaired)
    if not pairs:
        raise InputError(
            f"{config.eval_file or config.train_file}: the held-out rows make no pair (no prompt has "
            "both a good and a bad reply); give an eval_file of pairs"
        )
    return train, unpaired, pairs


def check_training_lengths(
    rows: list[dict[str, Any]], unpaired: bool, tokenizer: Any, config: DPOStageConfig
) -> None:
    """Count rows over `max_length` tokens (the trainers cut them); too many refuse the data."""
    if unpaired:
        lengths = [
            len(
                tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)
            )
            for r in rows
        ]
    else:
        lengths = [pair_length(tokenizer, r) for r in rows]
    what = f"{config.train_file}: training {'rows' if unpaired else 'pairs'} (cut to max_length)"
    check_lengths(lengths, config.max_length, config.max_bad_fraction, what, config.truncate)


def completion_logps(
    model: Any, tokenizer: Any, rows: list[tuple[list[dict], list[dict]]], batch_size: int
) -> list[tuple[float, int]]:
    """(sum of log π(token), number of tokens) of each (prompt, completion)'s completion, rendered
    through the chat template as TRL's DPOTrainer renders it (the completion starts where the
    prompt with its generation prompt and the whole conversation diverge)."""
    import torch
    from trl.data_utils import common_prefix_length

    encoded = []
    for prompt, completion in rows:
        prompt_ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=False)
        encoded.append((full, common_prefix_length(prompt_ids, full)))
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(encoded[i][0])] = torch.tensor(encoded[i][0])
                mask[row, : len(encoded[i][0])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            token_logps = torch.log_softmax(logits[:, :-1], dim=-1)
            token_logps = token_logps.gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)
            for row, i in enumerate(batch):
                full, begin = encoded[i]
                results[i] = (token_logps[row, begin - 1 : len(full) - 1].sum().item(), len(full) - begin)
    model.train(was_training)
    return results


def pair_logps(model: Any, tokenizer: Any, pairs: list[dict[str, Any]], batch_size: int) -> dict[str, list]:
    """`completion_logps` of every pair's chosen and rejected reply."""
    return {
        side: [
            list(x)
            for x in completion_logps(model, tokenizer, [(p["prompt"], p[side]) for p in pairs], batch_size)
        ]
        for side in ("chosen", "rejected")
    }


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> dict[str, float | int | None]:
    """Share of pairs with chosen > rejected (a tie is a miss), its n, standard error (a share of
    n 0/1 scores, as `align eval` reports one) and the mean margin chosen − rejected."""
    hits = [c > r for c, r in zip(chosen, rejected, strict=True)]
    n = len(hits)
    share = sum(hits) / n
    return {
        "accuracy": round(share, 4),
        "n": n,
        "se": round(math.sqrt(share * (1 - share) / (n - 1)), 4) if n > 1 else None,
        "mean_margin": round(statistics.fmean(c - r for c, r in zip(chosen, rejected, strict=True)), 4),
    }


def log_likelihoods(logps: list[list], length_normalised: bool) -> list[float]:
    """A reply's log-likelihood as the method's reward reads it: the sum, or the mean per token."""
    return [total / max(tokens, 1) if length_normalised else total for total, tokens in logps]


def implicit_rewards(
    policy: list[list], reference: list[list] | None, beta: float, length_normalised: bool
) -> list[float]:
    """r = β·(log π(y|x) − log π_ref(y|x)), or β·log π(y|x) without a reference."""
    mine = log_likelihoods(policy, length_normalised)
    if reference is None:
        return [beta * x for x in mine]
    return [beta * (x - y) for x, y in zip(mine, log_likelihoods(reference, length_normalised), strict=True)]


def held_out_report(
    config: DPOStageConfig, start: dict[str, list], reference: dict[str, list] | None, after: dict[str, list]
) -> dict[str, Any]:
    """`eval.json`: the implicit-reward accuracy of the trained policy, and the starting and trained
    models' plain likelihood preference (log π(chosen) > log π(rejected)) beside it."""
    norm = config.length_normalised
    rewards = {
        s: implicit_rewards(after[s], None if reference is None else reference[s], config.beta, norm)
        for s in after
    }
    return {
        "method": config.method,
        "loss_type": config.loss,
        "beta": config.beta,
        "reference": str(config.reference or config.model) if reference is not None else None,
        "length_normalised": norm,
        "implicit_reward_accuracy": pairwise_accuracy(rewards["chosen"], rewards["rejected"]),
        "likelihood_accuracy_before": pairwise_accuracy(
            log_likelihoods(start["chosen"], norm), log_likelihoods(start["rejected"], norm)
        ),
        "likelihood_accuracy": pairwise_accuracy(
            log_likelihoods(after["chosen"], norm), log_likelihoods(after["rejected"], norm)
        ),
    }


def build_trainer(
    config: DPOStageConfig,
    tokenizer: Any,
    train: list[dict[str, Any]],
    unpaired: bool,
    held_out: list[dict[str, Any]],
) -> Any:
    """The method's TRL trainer over the policy (and its reference), on the training rows."""
    import os

    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.data_utils import unpair_preference_dataset

    model = AutoModelForCausalLM.from_pretrained(str(config.model), **config.model_kwargs())
    model.config.pad_token_id = tokenizer.pad_token_id
    reference = None
    if config.reference is not None:
        reference = AutoModelForCausalLM.from_pretrained(str(config.reference), **config.model_kwargs())
    arguments = {
        **config.trainer_arguments(),
        "bf16": config.dtype == "bfloat16" or config.bf16_autocast,
        "beta": config.beta,
        "gradient_checkpointing": config.gradient_checkpointing,
        "dataset_num_proc": None,
    }
    common = {
        "model": model,
        "processing_class": tokenizer,
        "peft_config": config.peft_config("CAUSAL_LM"),
        "callbacks": [FiniteGradients()],
    }
    columns = ("prompt", "chosen", "rejected")
    pairs = Dataset.from_list([{k: r[k] for k in columns} for r in held_out])
    if config.method == "kto":
        from trl import KTOConfig, KTOTrainer

        # KTO samples in file order (its KL term pairs each reply with its batch neighbours' prompts),
        # and TRL's unpairing puts a chunk's good replies before its bad ones: shuffle, seeded.
        if unpaired:
            rows = Dataset.from_list([{k: r[k] for k in ("prompt", "completion", "label")} for r in train])
        else:
            rows = unpair_preference_dataset(Dataset.from_list([{k: r[k] for k in columns} for r in train]))
        args = KTOConfig(
            **arguments,
            loss_type=config.loss,
            desirable_weight=config.desirable_weight,
            undesirable_weight=config.undesirable_weight,
        )
        return KTOTrainer(
            ref_model=reference,
            args=args,
            train_dataset=rows.shuffle(seed=config.seed),
            eval_dataset=unpair_preference_dataset(pairs),
            **common,
        )
    dataset = Dataset.from_list([{k: r[k] for k in columns} for r in train])
    if config.method == "dpo" and not config.reference_free:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**arguments, loss_type=[config.loss], label_smoothing=config.label_smoothing)
        return DPOTrainer(ref_model=reference, args=args, train_dataset=dataset, eval_dataset=pairs, **common)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live there in TRL 1.16
    if config.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(**arguments), train_dataset=dataset, eval_dataset=pairs, **common)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    # SimPO, and DPO without a reference, are CPO's losses without its NLL term (cpo_alpha 0).
    args = CPOConfig(**arguments, loss_type=config.loss, cpo_alpha=0.0, simpo_gamma=config.simpo_gamma)
    return CPOTrainer(args=args, train_dataset=dataset, eval_dataset=pairs, **common)


def run_dpo(config: DPOStageConfig) -> Path:
    """Optimise `config.model` on the preferences of `config.train_file`; returns the output directory."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(config.model)
    train, unpaired, held_out = load_data(config)
    check_training_lengths(train, unpaired, tokenizer, config)
    log.info(
        "%s (%s) on %d %s, %d held-out pairs",
        config.method,
        config.loss,
        len(train),
        "unpaired rows" if unpaired else "pairs",
        len(held_out),
    )
    trainer = build_trainer(config, tokenizer, train, unpaired, held_out)
    resume = config.last_checkpoint()
    before_file = config.checkpoint_dir / "held_out_logps.json"
    if resume is None or not before_file.exists():
        before = {
            "start": pair_logps(trainer.model, tokenizer, held_out, config.batch_size),
            "reference": None,
        }
        if config.reference is not None:
            reference = AutoModelForCausalLM.from_pretrained(str(config.reference), **config.model_kwargs())
            before["reference"] = pair_logps(reference, tokenizer, held_out, config.batch_size)
            del reference
        if trainer.is_world_process_zero():
            before_file.parent.mkdir(parents=True, exist_ok=True)
            before_file.write_text(json.dumps(before))
    else:
        log.info("resuming from %s", resume)
        before = json.loads(before_file.read_text())
    result = trainer.train(resume_from_checkpoint=resume)
    after = pair_logps(trainer.model, tokenizer, held_out, config.batch_size)
    reference_logps = (before["reference"] or before["start"]) if config.has_reference else None
    report = held_out_report(config, before["start"], reference_logps, after)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "train_loss": result.training_loss,
        "last_logged": logged[-1] if logged else {},
        "train_rows": len(train),
        "unpaired": unpaired,
        "held_out_pairs": len(held_out),
        "steps": trainer.state.global_step,
        "processes": trainer.args.world_size,
    }
    out = save_trained(
        trainer, tokenizer, config.output_dir, {"dpo_metrics.json": metrics, "eval.json": report}
    )
    accuracy = report["implicit_reward_accuracy"]
    log.info(
        "held-out implicit-reward pairwise accuracy %.3f ± %.3f (n=%d); likelihood preference %.3f -> %.3f",
        accuracy["accuracy"],
        accuracy["se"] or 0.0,
        accuracy["n"],
        report["likelihood_accuracy_before"]["accuracy"],
        report["likelihood_accuracy"]["accuracy"],
    )
    return out
