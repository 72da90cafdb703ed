"""`align dpo`: offline preference optimisation on TRL's trainers. Our config reaches the TRL loss
it names (checked against the formulas by hand), the held-out implicit-reward accuracy is what the
definition says, every method trains a policy, and bad input is one line."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from align.dpo import build_trainer, completion_logps, held_out_report, load_data, pairwise_accuracy, run_dpo
from align.dpo_config import DPO_LOSS_TYPES, KTO_LOSS_TYPES, REFERENCE_FREE_LOSS_TYPES, DPOStageConfig
from align.errors import ConfigError
from align.models import load_tokenizer

PREFERENCES = REPO / "data" / "tasks" / "preferences.jsonl"


def write_pairs(path: Path, n: int) -> Path:
    with open(PREFERENCES, encoding="utf-8") as f:
        path.write_text("".join(islice(f, n)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def other_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny Llama on the same tokenizer (another seed): a reference that differs from the
    policy, so every log-ratio in a loss is non-zero."""
    from align.models import build_model

    out = tmp_path_factory.mktemp("tiny-reference")
    tokenizer = load_tokenizer(tiny_model_dir)
    build_model("tiny", tokenizer, seed=1, max_position_embeddings=512).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def config(tiny_model_dir: Path, tmp_path: Path, pairs: int = 8, **fields) -> DPOStageConfig:
    return DPOStageConfig(
        model=tiny_model_dir,
        train_file=write_pairs(tmp_path / "prefs.jsonl", pairs),
        output_dir=tmp_path / "out",
        eval_fraction=0.25,
        max_length=256,
        truncate=True,
        batch_size=4,
        max_steps=1,
        **fields,
    )


def trainer_for(cfg: DPOStageConfig):
    tokenizer = load_tokenizer(cfg.model)
    train, unpaired, held_out = load_data(cfg)
    return build_trainer(cfg, tokenizer, train, unpaired, held_out)


def sequence_logps(model, input_ids, attention_mask, mask, mean: bool = False) -> torch.Tensor:
    """log π of the masked tokens of each row, summed (or averaged), with plain PyTorch."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    token = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = mask[:, 1:].float()
    total = (token * mask).sum(-1)
    return total / mask.sum(-1) if mean else total


# --- the loss our config names is the loss TRL computes --------------------------------------


def test_our_loss_lists_are_trls() -> None:
    import os

    from trl import DPOConfig, KTOConfig

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.cpo import CPOConfig

    def field(cls, name):
        return next(f for f in dataclasses.fields(cls) if f.name == name).metadata

    assert tuple(re.findall(r"`'(\w+)'`", field(DPOConfig, "loss_type")["help"])) == DPO_LOSS_TYPES
    assert tuple(field(KTOConfig, "loss_type")["choices"]) == KTO_LOSS_TYPES
    assert set(REFERENCE_FREE_LOSS_TYPES) <= set(field(CPOConfig, "loss_type")["choices"])


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_every_dpo_loss_type_runs_in_trl(loss_type: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    smoothing = 0.1 if loss_type in ("robust", "exo_pair", "aot", "aot_unpaired") else 0.0
    trainer = trainer_for(config(tiny_model_dir, tmp_path, loss_type=loss_type, label_smoothing=smoothing))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)


def dpo_by_hand(loss_type: str, beta: float, smoothing: float, c, r, ref_c, ref_r, len_c, len_r):
    h = (c - ref_c) - (r - ref_r)
    if loss_type == "sigmoid":  # DPO: −log σ(β·h)
        return -F.logsigmoid(beta * h)
    if loss_type == "hinge":  # SLiC: max(0, 1 − β·h)
        return torch.clamp(1 - beta * h, min=0)
    if loss_type == "ipo":  # IPO (Eq. 17), the log-ratios per completion token as TRL takes them
        h_per_token = (c - ref_c) / len_c - (r - ref_r) / len_r
        return (h_per_token - 1 / (2 * beta)) ** 2
    # robust DPO: ((1 − ε)·ℓ(h) − ε·ℓ(−h)) / (1 − 2ε), ℓ(h) = −log σ(β·h)
    return ((1 - smoothing) * -F.logsigmoid(beta * h) - smoothing * -F.logsigmoid(-beta * h)) / (
        1 - 2 * smoothing
    )


@pytest.mark.parametrize(
    ("loss_type", "beta", "smoothing"),
    [("sigmoid", 0.1, 0.0), ("hinge", 0.3, 0.0), ("ipo", 0.5, 0.0), ("robust", 0.2, 0.2)],
)
def test_dpo_losses_equal_their_formulas(
    loss_type: str, beta: float, smoothing: float, tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path
) -> None:
    cfg = config(
        tiny_model_dir,
        tmp_path,
        loss_type=loss_type,
        beta=beta,
        label_smoothing=smoothing,
        reference=other_model_dir,
    )
    trainer = trainer_for(cfg)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        policy = sequence_logps(trainer.model, ids, attention, completion)
        reference = sequence_logps(trainer.ref_model, ids, attention, completion)
    half = ids.shape[0] // 2  # TRL's batch: the chosen rows, then the rejected ones
    lengths = completion.sum(-1).float()
    expected = dpo_by_hand(
        loss_type,
        beta,
        smoothing,
        policy[:half],
        policy[half:],
        reference[:half],
        reference[half:],
        lengths[:half],
        lengths[half:],
    ).mean()
    assert (policy - reference).abs().min() > 1e-3  # a real reference: the formula is not at h = 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(("method", "loss_type"), [("dpo", "sigmoid"), ("simpo", None)])
def test_reference_free_losses_equal_their_formulas(
    method: str, loss_type: str | None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    beta, gamma = 0.7, 0.3
    fields = {"reference_free": True, "loss_type": loss_type} if method == "dpo" else {"simpo_gamma": gamma}
    trainer = trainer_for(config(tiny_model_dir, tmp_path, method=method, beta=beta, **fields))
    batch = next(iter(trainer.get_train_dataloader()))
    mean = method == "simpo"  # SimPO's reward is the mean token log-prob
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        c, r = (
            sequence_logps(
                trainer.model,
                batch[f"{side}_input_ids"],
                batch[f"{side}_attention_mask"],
                (batch[f"{side}_labels"] != -100).long(),  # the reply's tokens (prompt and padding: -100)
                mean=mean,
            )
            for side in ("chosen", "rejected")
        )
    # Reference-free DPO: −log σ(β·(log π(c) − log π(r))); SimPO: −log σ(β·(mean c − mean r) − γ);
    # CPO's NLL term must be off in both (cpo_alpha 0), or it would be added here.
    expected = -F.logsigmoid(beta * (c - r) - (gamma if method == "simpo" else 0.0))
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-4, abs=1e-5)


# --- held-out implicit rewards -----------------------------------------------------------------


def test_implicit_reward_accuracy_by_hand(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, tmp_path, beta=0.5)
    # (sum of log-probs, tokens) of three pairs' chosen and rejected replies.
    start = {"chosen": [[-10.0, 5], [-8.0, 4], [-6.0, 3]], "rejected": [[-9.0, 5], [-8.0, 4], [-7.0, 2]]}
    after = {"chosen": [[-9.0, 5], [-9.0, 4], [-5.0, 3]], "rejected": [[-10.0, 5], [-8.5, 4], [-7.0, 2]]}
    report = held_out_report(cfg, start, start, after)
    # r = 0.5·(log π − log π_ref): chosen 0.5, −0.5, 0.5; rejected −0.5, −0.25, 0 → 1, 0, 1 of 3.
    share = 2 / 3
    assert report["implicit_reward_accuracy"] == {
        "accuracy": round(share, 4),
        "n": 3,
        "se": round(math.sqrt(share * (1 - share) / 2), 4),
        "mean_margin": round((1.0 - 0.25 + 0.5) / 3, 4),
    }
    # The start's own preference: −10 < −9 (miss), −8 = −8 (a tie is a miss), −6 > −7 (hit).
    assert report["likelihood_accuracy_before"]["accuracy"] == round(1 / 3, 4)
    free = dataclasses.replace(cfg, method="simpo", output_dir=tmp_path / "free")
    # SimPO, no reference, per token: chosen −1.8, −2.25, −1.667; rejected −2, −2.125, −3.5.
    assert held_out_report(free, start, None, after)["implicit_reward_accuracy"]["accuracy"] == round(
        2 / 3, 4
    )
    assert pairwise_accuracy([1.0], [0.0]) == {"accuracy": 1.0, "n": 1, "se": None, "mean_margin": 1.0}


def test_held_out_log_probs_equal_trls(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, tmp_path)
    trainer, tokenizer = trainer_for(cfg), load_tokenizer(tiny_model_dir)
    _, _, held_out = load_data(cfg)
    batch = next(iter(trainer.get_eval_dataloader()))  # in order, as our held-out pairs
    trl_chosen, trl_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    ours = completion_logps(
        trainer.model, tokenizer, [(p["prompt"], p[s]) for s in ("chosen", "rejected") for p in held_out], 3
    )
    n = len(held_out)
    assert [x for x, _ in ours[:n]] == pytest.approx(trl_chosen.tolist(), abs=1e-4)
    assert [x for x, _ in ours[n:]] == pytest.approx(trl_rejected.tolist(), abs=1e-4)
    assert [t for _, t in ours[:n]] == batch["completion_mask"][:n].sum(-1).tolist()


def test_held_out_pairs_are_the_reward_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    from rewards.reward_config import RewardStageConfig
    from rewards.train import preference_splits

    cfg = config(tiny_model_dir, tmp_path, pairs=40, seed=3)
    rm = RewardStageConfig(
        model=cfg.model, train_file=cfg.train_file, output_dir=tmp_path / "rm", eval_fraction=0.25, seed=3
    )
    train, _, held_out = load_data(cfg)
    rm_train, rm_held_out = preference_splits(rm)
    assert held_out == rm_held_out and train == rm_train


# --- every method trains and writes a policy ---------------------------------------------------


def unpaired_file(path: Path, pairs: Path) -> Path:
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
    path.write_text(
        "".join(
            json.dumps({"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}) + "\n"
            for r in rows
            for side in ("chosen", "rejected")
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "fields",
    [
        {"method": "dpo"},
        {"method": "dpo", "loss_type": "ipo", "reference_free": True},
        {"method": "kto"},
        {"method": "kto", "unpaired": True},
        {"method": "orpo"},
        {"method": "simpo"},
    ],
    ids=["dpo", "dpo-reference-free", "kto-pairs", "kto-unpaired", "orpo", "simpo"],
)
def test_every_method_trains_a_policy(fields: dict, tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = config(
        tiny_model_dir,
        tmp_path,
        pairs=16,
        learning_rate=1e-3,
        warmup=0,  # one step: a warm-up would make it a step of lr 0
        **{k: v for k, v in fields.items() if k != "unpaired"},
    )
    if fields.get("unpaired"):
        cfg = dataclasses.replace(cfg, train_file=unpaired_file(tmp_path / "unpaired.jsonl", cfg.train_file))
    out = run_dpo(cfg)
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    report = json.loads((out / "eval.json").read_text())
    accuracy = report["implicit_reward_accuracy"]
    assert 0 <= accuracy["accuracy"] <= 1 and accuracy["n"] >= 4 and accuracy["se"] is not None
    assert (report["reference"] is None) == (cfg.method in ("orpo", "simpo") or cfg.reference_free)
    metrics = json.loads((out / "dpo_metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["unpaired"] == bool(fields.get("unpaired"))


@pytest.mark.slow
def test_align_dpo_trains_on_the_demo_labels_export(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The labelling store's export, as the demo writes it, straight into `align dpo`."""
    from align.cli import main

    candidates = tmp_path / "candidates.jsonl"
    with open(REPO / "data" / "tasks" / "candidates.jsonl", encoding="utf-8") as f:
        candidates.write_text("".join(islice(f, 24)))
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    export = tmp_path / "preferences.jsonl"
    assert main(["label", "add", "--store", url, "--jsonl", str(candidates)]) == 0
    assert main(["label", "judge", "--store", url]) == 0
    assert main(["label", "export", "--store", url, "--output", str(export), "--criteria", "overall"]) == 0
    out = tmp_path / "dpo"
    args = ["dpo", "--model", str(tiny_model_dir), "--train_file", str(export), "--output_dir", str(out)]
    args += ["--max_steps", "2", "--batch_size", "4", "--eval_fraction", "0.2", "--max_length", "256"]
    assert main([*args, "--truncate", "true", "--beta", "0.1"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["method"] == "dpo" and report["implicit_reward_accuracy"]["n"] >= 3


@pytest.mark.slow
def test_the_real_base_recipe_runs_dpo_on_its_exported_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    write_pairs(tmp_path / "preferences.jsonl", 8)
    recipe = REPO / "scripts/recipes/smollm2.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "align.cli",
            "dpo",
            "--config",
            str(recipe),
            "--run_dir",
            str(tmp_path),
            "--check_config",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"train_file: {tmp_path}/preferences.jsonl" in result.stdout


# --- bad input: one line ----------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, message: str) -> None:
    """The promise of tests/test_bad_input.py: the exit status, one `error:` line, no traceback."""
    assert result.returncode == status, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def align(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "align.cli", "dpo", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("", "no records"),
        ('{"prompt": "hi", "answer": "x"}\n' * 4, "missing field(s) chosen, rejected"),
        (
            "".join(
                f'{{"prompt": "hi {i}", "completion": "x", "label": {str(i % 2 == 0).lower()}}}\n'
                for i in range(8)
            ),
            "unpaired rows (prompt, completion, label) train only method: kto",
        ),
        ('{"prompt": "hi", "completion": "x", "label": "yes"}\n' * 4, "label 'yes' must be true"),
    ],
    ids=["empty", "missing-columns", "unpaired-for-dpo", "bad-label"],
)
def test_bad_preference_files_are_one_line(
    rows: str, message: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(rows, encoding="utf-8")
    result = align("--model", tiny_model_dir, "--train_file", data, "--output_dir", tmp_path / "out")
    assert_one_line_error(result, 1, message)


def test_a_file_mixing_pairs_and_unpaired_rows_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "prefs.jsonl", 30)
    with open(data, "a", encoding="utf-8") as f:
        f.write('{"prompt": "hi", "completion": "x", "label": true}\n')
    result = align(
        "--model", tiny_model_dir, "--train_file", data, "--output_dir", tmp_path / "out", "--method", "kto"
    )
    assert_one_line_error(result, 1, "mixes preference pairs")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"loss_type": "sigmod"}, "loss_type: 'sigmod' is not a dpo loss; allowed: sigmoid, hinge"),
        ({"method": "orpo", "loss_type": "ipo"}, "loss_type: orpo has one loss"),
        ({"label_smoothing": 0.1}, "label_smoothing: the sigmoid loss ignores it"),
        (
            {"loss_type": "robust", "label_smoothing": 0.5},
            "label_smoothing: the robust loss needs it below 0.5",
        ),
        (
            {"reference_free": True, "loss_type": "robust"},
            "reference_free: TRL has no reference-free 'robust' loss",
        ),
        ({"method": "kto", "reference_free": True}, "reference_free: only for method dpo"),
        ({"method": "simpo", "reference": "MODEL"}, "reference: simpo without a reference cannot use one"),
        ({"beta": 0}, "beta: must be > 0"),
        ({"method": "kto", "batch_size": 1}, "batch_size: kto estimates its KL term"),
    ],
)
def test_bad_settings_are_config_errors(
    fields: dict, message: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fields = {k: tiny_model_dir if v == "MODEL" else v for k, v in fields.items()}
    with pytest.raises(ConfigError, match=re.escape(message)):
        DPOStageConfig(
            model=tiny_model_dir,
            train_file=write_pairs(tmp_path / "p.jsonl", 4),
            output_dir=tmp_path / "o",
            **fields,
        )


def test_a_bad_setting_on_the_command_line_is_one_line_exit_2(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "prefs.jsonl", 4)
    result = align(
        "--model", tiny_model_dir, "--train_file", data, "--output_dir", tmp_path / "o", "--loss_type", "dop"
    )
    assert_one_line_error(result, 2, "loss_type: 'dop' is not a dpo loss")
