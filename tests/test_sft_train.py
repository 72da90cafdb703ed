"""SFT runs end to end on the demo data: LoRA adapters PEFT reloads, resume, two CPU processes."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def head(name: str, n: int, out: Path) -> Path:
    """The first n lines of a bundled demo file."""
    lines = (REPO / "data/tasks" / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    out.write_text("".join(lines), encoding="utf-8")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lora_sft_resumes_and_saves_an_adapter_peft_reloads(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from peft import AutoPeftModelForCausalLM

    from align.sft import run_sft
    from align.sft_config import SFTStageConfig

    def config(max_steps: int) -> SFTStageConfig:
        return SFTStageConfig(
            model=tiny_model_dir,
            train_file=head("sft_train.jsonl", 64, tmp_path / "train.jsonl"),
            eval_file=head("sft_eval.jsonl", 16, tmp_path / "eval.jsonl"),
            output_dir=tmp_path / "sft",
            max_length=128,
            truncate=True,
            batch_size=4,
            max_steps=max_steps,
            save_steps=2,
            eval_steps=2,
            learning_rate=1e-2,
            lora=True,
        )

    run_sft(config(4))
    with caplog.at_level(logging.INFO):
        out = run_sft(config(6))
    assert f"resuming from {tmp_path / 'sft' / 'checkpoints' / 'checkpoint-4'}" in caplog.text
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    metrics = json.loads((out / "sft_metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_base"]
    model = AutoPeftModelForCausalLM.from_pretrained(str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


@pytest.mark.slow
def test_sft_then_rm_run_on_two_cpu_processes(tiny_model_dir: Path, tmp_path: Path) -> None:
    launch = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "scripts/accelerate/cpu_2proc.yaml"),
        "--main_process_port",
        str(free_port()),
        "-m",
        "align.cli",
    ]
    common = [
        "--max_length",
        "128",
        "--truncate",
        "true",
        "--batch_size",
        "4",
        "--max_steps",
        "2",
        "--eval_steps",
        "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sft = [
        *launch,
        "sft",
        "--model",
        str(tiny_model_dir),
        "--train_file",
        str(head("sft_train.jsonl", 48, tmp_path / "sft.jsonl")),
        "--output_dir",
        str(tmp_path / "sft"),
        *common,
    ]
    subprocess.run(sft, check=True, cwd=REPO, env=env, timeout=300)
    assert json.loads((tmp_path / "sft" / "sft_metrics.json").read_text())["processes"] == 2
    rm = [
        *launch,
        "rm",
        "--model",
        str(tmp_path / "sft"),
        "--train_file",
        str(head("preferences.jsonl", 48, tmp_path / "prefs.jsonl")),
        "--output_dir",
        str(tmp_path / "rm"),
        *common,
    ]
    subprocess.run(rm, check=True, cwd=REPO, env=env, timeout=300)
    assert json.loads((tmp_path / "rm" / "rm_metrics.json").read_text())["processes"] == 2
    assert (tmp_path / "rm" / "model.safetensors").exists()
