"""The GPU check: measure the suite on one GPU in one call, each step in its own process and time limit.

Steps, in order (a failed or timed-out step is recorded and the next one runs):
  prepare           tokenizers, the pretraining documents, a chat model (SmolLM2-135M when its HF
                    directory is given, else a same-shape stand-in) and a reward model built from it
  pretrain          our packed loop on the 1B preset, bf16, SDPA, 2,048-token rows (the project's
                    `align pretrain` loop, driven by scripts/bench/pretrain.py): tokens/s, MFU, memory
  pretrain_hf       the HF `Trainer` on padded batches of the same documents: the baseline's tokens/s
  resume            `align pretrain` killed (SIGKILL) and resumed with `--resume auto`, against the
                    uninterrupted run: bit-identical weights and data ledger, on CUDA
  sft, rm           `align sft` and `align rm` (TRL) in bf16: samples/s after warm-up
  ppo               `align ppo` with a `transformers.generate` engine on the GPU: the time split
  model_only        the 1B model's forward/backward/AdamW alone on one fixed batch, and a profile of
                    its kernels: the ceiling the loop is measured against, and what limits it
  pretrain_compile  (with --compile, when time is left) the pretrain step with `torch.compile`

    bash scripts/gpu/check.sh --compile              # the GPU machine, wheels in scripts/gpu/wheels
    bash scripts/gpu/check.sh --smoke --compile --out /tmp/gpu-check   # CPU, tiny sizes, ~2 min

Writes OUT/gpu.json (rewritten after every step, so a cut-off run keeps what it measured) and
OUT/check.log (every step's output); the last line printed is
RESULT mfu_6n=... mfu_attn=... tokens_per_s=... trainer_ratio=... resume_equal=... sft_samples_per_s=...
rm_samples_per_s=... ppo_generation_share=...
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = ("prepare", "pretrain", "pretrain_hf", "resume", "sft", "rm", "ppo", "model_only", "pretrain_compile")
H200_BF16_PEAK_TFLOPS = 989.0  # dense, SXM datasheet
SMOLLM2_VOCAB = 49152
VERSIONS = ("torch", "transformers", "accelerate", "trl", "datasets", "peft", "tokenizers", "safetensors",
            "pyarrow", "fsspec", "huggingface-hub", "dill", "multiprocess", "numpy")  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU smoke run."""

    preset: str
    vocab: int  # the pretraining tokenizer is padded to this size (the 1B preset's 65.5k vocabulary)
    dtype: str
    seq_len: int
    batch_size: int
    steps: int
    warmup: int
    docs: int
    resume_preset: str
    resume_seq_len: int
    resume_batch_size: int
    resume_phase_steps: int
    resume_kill_at: int
    chat_preset: str  # the stand-in for SmolLM2-135M when its directory is not given
    chat_vocab: int
    finetune_steps: int
    finetune_warmup: int
    finetune_batch_size: int
    max_length: int
    sft_rows: int
    rm_rows: int
    eval_rows: int
    ppo_iterations: int
    ppo_prompts: int
    ppo_new_tokens: int
    ppo_minibatch: int
    model_steps: int
    limits: dict[str, int]  # seconds per step
    budget: int  # seconds for the whole check


GPU = Sizes(
    preset="1b", vocab=65536, dtype="bfloat16", seq_len=2048, batch_size=8, steps=40, warmup=10, docs=4000,
    resume_preset="m30", resume_seq_len=512, resume_batch_size=8, resume_phase_steps=6, resume_kill_at=9,
    chat_preset="m135", chat_vocab=SMOLLM2_VOCAB, finetune_steps=30, finetune_warmup=5,
    finetune_batch_size=16, max_length=512, sft_rows=2000, rm_rows=2000, eval_rows=64,
    ppo_iterations=3, ppo_prompts=64, ppo_new_tokens=64, ppo_minibatch=32, model_steps=10,
    limits=dict(prepare=60, pretrain=200, pretrain_hf=120, resume=150, sft=100, rm=100, ppo=120,
                model_only=90, pretrain_compile=240),
    budget=460,
)  # fmt: skip
SMOKE = Sizes(
    preset="tiny", vocab=0, dtype="bfloat16", seq_len=64, batch_size=4, steps=6, warmup=2, docs=400,
    resume_preset="tiny", resume_seq_len=32, resume_batch_size=4, resume_phase_steps=3, resume_kill_at=4,
    chat_preset="tiny", chat_vocab=0, finetune_steps=4, finetune_warmup=1, finetune_batch_size=4,
    max_length=128, sft_rows=32, rm_rows=32, eval_rows=8,
    ppo_iterations=2, ppo_prompts=4, ppo_new_tokens=8, ppo_minibatch=4, model_steps=3,
    limits={name: 240 for name in STEPS},
    budget=1200,
)  # fmt: skip


# --- the steps: each runs in its own process and returns its figures -------------------------------


def step_prepare(args, sizes: Sizes, work: Path) -> dict:
    """Tokenizers and documents for pretraining; the chat model and a reward model for SFT/RM/PPO."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from align.checkpoint import save_pretrained_atomically
    from align.models import build_model, count_parameters, load_tokenizer, train_tokenizer

    texts = bench().documents(sizes.docs, seed=0)
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    tokenizer.save_pretrained(work / "tokenizer_base")
    base_vocab = len(tokenizer)
    if sizes.vocab > len(tokenizer):  # the model's vocabulary size, not the text, sets the cost
        tokenizer.add_tokens(
            [f"<|unused_{i}|>" for i in range(sizes.vocab - len(tokenizer))], special_tokens=True
        )
    tokenizer.save_pretrained(work / "tokenizer")
    rows = "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    (work / "docs.jsonl").write_text(rows, encoding="utf-8")

    for name, source, count in (
        ("sft_train", "sft_train", sizes.sft_rows),
        ("sft_eval", "sft_eval", sizes.eval_rows),
        ("rm_train", "preferences", sizes.rm_rows),
        ("rm_eval", "preferences", -sizes.eval_rows),  # the file's last rows: none of the training ones
    ):
        lines = (REPO / "data/tasks" / f"{source}.jsonl").read_text(encoding="utf-8").splitlines()
        chosen = lines[count:] if count < 0 else lines[:count]
        (work / f"{name}.jsonl").write_text("\n".join(chosen) + "\n", encoding="utf-8")

    smollm2 = Path(args.smollm2) if args.smollm2 else None
    if smollm2 is not None and (smollm2 / "config.json").is_file():
        chat, chat_label = smollm2.resolve(), f"SmolLM2-135M from {smollm2}"
        chat_tokenizer = load_tokenizer(chat)
    else:
        chat = work / "chat_base"
        chat_label = f"the {sizes.chat_preset} preset, randomly initialised"
        if sizes.chat_vocab:
            chat_label += f", {sizes.chat_vocab:,} vocabulary (SmolLM2-135M's shape)"
        if smollm2 is not None:
            chat_label += f"; {smollm2} holds no HF model, so SmolLM2-135M itself was not run"
        chat_texts = [
            m["content"]
            for line in (work / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()
            for m in json.loads(line)["messages"]
        ]
        chat_tokenizer = train_tokenizer(chat_texts, vocab_size=2048)
        model = build_model(sizes.chat_preset, chat_tokenizer, seed=0)
        if sizes.chat_vocab > len(chat_tokenizer):
            model.resize_token_embeddings(sizes.chat_vocab)
        save_pretrained_atomically(chat, model, chat_tokenizer)
    reward_model = AutoModelForSequenceClassification.from_pretrained(str(chat), num_labels=1)
    reward_model.config.pad_token_id = chat_tokenizer.pad_token_id
    save_pretrained_atomically(work / "chat_rm", reward_model, chat_tokenizer)
    (work / "chat.json").write_text(json.dumps({"path": str(chat), "label": chat_label}), encoding="utf-8")

    device = {"cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                      capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                      cuda=torch.version.cuda)  # fmt: skip
    return {
        "device": device,
        "pretrain_vocab": len(tokenizer),
        "pretrain_vocab_trained": base_vocab,
        "documents": len(texts),
        "chat_model": chat_label,
        "chat_parameters": count_parameters(reward_model) - reward_model.score.weight.numel(),
    }


def step_pretrain(args, sizes: Sizes, work: Path) -> dict:
    """Our packed loop (`align pretrain`) as scripts/bench/pretrain.py runs it: tokens/s and MFU."""
    return pretrain_figures(args, sizes, work, "ours")


def step_pretrain_compile(args, sizes: Sizes, work: Path) -> dict:
    """The same with `torch.compile`, which Accelerate applies in `prepare` when told by its env."""
    import torch

    # Inductor on CPU needs a compiler and minutes; the smoke run checks the Dynamo path only.
    os.environ["ACCELERATE_DYNAMO_BACKEND"] = "INDUCTOR" if torch.cuda.is_available() else "EAGER"
    # Whole-model: Accelerate's regional compilation wraps the tied embedding and head apart, and
    # the loop's final `save_pretrained` then refuses their shared tensor.
    figures = pretrain_figures(args, sizes, work, "compiled")
    figures["backend"] = os.environ["ACCELERATE_DYNAMO_BACKEND"].lower()
    return figures


def pretrain_figures(args, sizes: Sizes, work: Path, name: str) -> dict:
    import torch

    from align.models import build_model, load_tokenizer
    from align.pretrain.throughput import flops_per_token

    tokens_per_s, share, _ = bench().run_ours(
        bench_args(sizes), work, work.parent / "tokenizer", work.parent / "docs.jsonl"
    )
    with torch.device("meta"):  # the loop's model, counted without memory
        model = build_model(sizes.preset, load_tokenizer(work.parent / "tokenizer"))
    parameters, layers, hidden, attention = model_shape(model)
    peak = peak_flops(args, sizes)
    all_tokens_per_s = tokens_per_s / share  # MFU counts every token the model computes
    rows = [json.loads(line) for line in (work / "ours/metrics.jsonl").read_text().splitlines()]
    step_seconds = [sizes.batch_size * sizes.seq_len / r["tokens_per_s_per_device"] for r in rows]
    return {
        "run": name,
        "preset": sizes.preset,
        "parameters": parameters,
        "attention": attention,
        "dtype": sizes.dtype,
        "batch": f"{sizes.batch_size} x {sizes.seq_len} packed tokens",
        "timed_steps": sizes.steps - sizes.warmup,
        "tokens_per_s": round(tokens_per_s, 1),
        "real_token_share": round(share, 4),
        "mfu_6n": round(all_tokens_per_s * 6 * parameters / peak, 4),
        "mfu_attn": round(
            all_tokens_per_s * flops_per_token(parameters, layers, hidden, sizes.seq_len) / peak, 4
        ),
        "peak_tflops": round(peak / 1e12, 3),
        "first_step_s": round(step_seconds[0], 2),
        "median_step_s": round(statistics.median(step_seconds[sizes.warmup :]), 4),
        "loss_first_last": [round(rows[0]["loss"], 3), round(rows[-1]["loss"], 3)],
        **gpu_memory(torch),
    }


def step_pretrain_hf(args, sizes: Sizes, work: Path) -> dict:
    """The HF `Trainer` on padded batches of the same documents (the benchmark's baseline)."""
    import torch

    texts = bench().documents(sizes.docs, seed=0)
    tokens_per_s, share = bench().run_hf(bench_args(sizes), work, work.parent / "tokenizer", texts)
    return {
        "preset": sizes.preset,
        "batch": f"{sizes.batch_size} documents padded to the longest (at most {sizes.seq_len} tokens)",
        "tokens_per_s": round(tokens_per_s, 1),
        "real_token_share": round(share, 4),
        **gpu_memory(torch),
    }


def step_resume(args, sizes: Sizes, work: Path) -> dict:
    """`align pretrain` killed mid-run and resumed with `--resume auto` equals the uninterrupted run."""
    import yaml

    def recipe(name: str) -> Path:
        phase = {"batch_size": sizes.resume_batch_size, "seq_len": sizes.resume_seq_len,
                 "max_steps": sizes.resume_phase_steps, "lr": 3e-3, "warmup_ratio": 0.2}  # fmt: skip
        config = {
            "model": sizes.resume_preset, "tokenizer": str(work.parent / "tokenizer_base"),
            "output_dir": str(work / name), "save_steps": 2, "keep": 2, "report_to": ["none"],
            "peak_flops": 1e12, "dtype": sizes.dtype, "seed": 0,
            "sources": [{"name": "web", "path": str(work.parent / "docs.jsonl")}],
            "phases": [{**phase, "mixture": {"web": 1.0}}, {**phase, "mixture": {"web": 1.0}, "lr": 1e-3}],
        }  # fmt: skip
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def align_pretrain(path: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "align.cli", "pretrain", "--config", str(path), *extra]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True)

    def check(result: subprocess.CompletedProcess, returncode: int, what: str) -> None:
        if result.returncode != returncode:
            raise RuntimeError(
                f"{what}: exit {result.returncode}, expected {returncode}\n{result.stderr[-3000:]}"
            )

    check(align_pretrain(recipe("uninterrupted")), 0, "the uninterrupted run")
    killed = align_pretrain(
        recipe("resumed"), "--resume", "auto", "--test_kill_at_step", str(sizes.resume_kill_at)
    )
    check(killed, -signal.SIGKILL, f"the run killed at step {sizes.resume_kill_at}")
    resumed = align_pretrain(recipe("resumed"), "--resume", "auto")
    check(resumed, 0, "the resumed run")
    if "resumed from" not in resumed.stderr:
        raise RuntimeError("the resumed run did not say `resumed from`: it started afresh")
    difference, same_data = compare_runs(work / "uninterrupted", work / "resumed")
    figures = {
        "preset": sizes.resume_preset,
        "dtype": sizes.dtype,
        "steps": 2 * sizes.resume_phase_steps,
        "killed_at_step": sizes.resume_kill_at,
        "resume_equal": difference == 0.0 and same_data,
        "max_abs_weight_difference": difference,
        "same_documents_consumed": same_data,
    }
    if not figures["resume_equal"]:  # is it the resume, or does CUDA not repeat itself?
        check(align_pretrain(recipe("rerun")), 0, "the second uninterrupted run")
        rerun_difference, rerun_same_data = compare_runs(work / "uninterrupted", work / "rerun")
        figures["rerun_equal"] = rerun_difference == 0.0 and rerun_same_data
        figures["rerun_max_abs_weight_difference"] = rerun_difference
    return figures


def compare_runs(first: Path, second: Path) -> tuple[float | None, bool]:
    """(largest absolute difference of the final weights, None if their names differ; whether the
    same documents were consumed)."""
    from safetensors.torch import load_file

    from align.checkpoint import CheckpointManager

    ours, theirs = (load_file(run / "final" / "model.safetensors") for run in (first, second))
    if ours.keys() != theirs.keys():
        return None, False
    difference = max(float((ours[k].float() - theirs[k].float()).abs().max()) for k in ours)
    consumed = [
        json.loads((CheckpointManager(run / "checkpoints").latest() / "ledger.json").read_text())["consumed"]
        for run in (first, second)
    ]
    return difference, consumed[0] == consumed[1]


def step_sft(args, sizes: Sizes, work: Path) -> dict:
    """`align sft` (TRL's SFTTrainer, packed rows) in the check's dtype: samples/s after warm-up."""
    from align.sft import run_sft
    from align.sft_config import SFTStageConfig

    config = SFTStageConfig(**finetune_fields(sizes, work, "sft"))
    clock = install_step_clock()
    run_sft(config)
    return finetune_figures(sizes, work, clock, "packed rows")


def step_rm(args, sizes: Sizes, work: Path) -> dict:
    """`align rm` (TRL's RewardTrainer) in the check's dtype: preference pairs/s after warm-up."""
    from rewards.reward_config import RewardStageConfig
    from rewards.train import run_reward_training

    config = RewardStageConfig(**finetune_fields(sizes, work, "rm"))
    clock = install_step_clock()
    run_reward_training(config)
    return finetune_figures(sizes, work, clock, "preference pairs")


def finetune_fields(sizes: Sizes, work: Path, stage: str) -> dict:
    never = 10**6  # no evaluation, checkpoint or log inside the timed steps
    return dict(
        model=chat_model(work)[0], train_file=work.parent / f"{stage}_train.jsonl",
        eval_file=work.parent / f"{stage}_eval.jsonl", output_dir=work / "out", max_length=sizes.max_length, truncate=True,
        batch_size=sizes.finetune_batch_size, max_steps=sizes.finetune_steps, eval_steps=never,
        save_steps=never, logging_steps=never, resume=False, dtype=sizes.dtype, report_to=["none"],
    )  # fmt: skip


def install_step_clock():
    """Time the stage's own trainer steps: the stages take no callbacks, so join the Trainer's defaults."""
    import torch
    import transformers.trainer
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_train_begin(self, *_, **__):
            self.stamps = []

        def on_step_end(self, *_, **__):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())

    clock = StepClock()
    transformers.trainer.DEFAULT_CALLBACKS.append(clock)
    return clock


def finetune_figures(sizes: Sizes, work: Path, clock, unit: str) -> dict:
    import torch

    stamps, warmup = clock.stamps, sizes.finetune_warmup
    timed = len(stamps) - warmup
    if timed < 1:
        raise RuntimeError(f"{len(stamps)} trainer steps timed, {warmup} of them warm-up: nothing to measure")
    seconds = stamps[-1] - stamps[warmup - 1]
    return {
        "model": chat_model(work)[1],
        "dtype": sizes.dtype,
        "batch": f"{sizes.finetune_batch_size} {unit} of up to {sizes.max_length} tokens",
        "timed_steps": timed,
        "samples_per_s": round(sizes.finetune_batch_size * timed / seconds, 2),
        "step_s": round(seconds / timed, 4),
        **gpu_memory(torch),
    }


def step_ppo(args, sizes: Sizes, work: Path) -> dict:
    """`align ppo` with a `transformers.generate` engine on the trainer's device: the time split."""
    import torch

    from align.models import load_model, load_tokenizer
    from align.ppo.config import PPOConfig
    from align.ppo.loop import run_ppo
    from rollouts.hf_engine import HFEngine

    policy = chat_model(work)[0]
    config = PPOConfig(
        policy=policy, reward_model=work.parent / "chat_rm", prompts=REPO / "data/tasks/prompts_train.jsonl",
        output_dir=work / "out", engine="hf", iterations=sizes.ppo_iterations,
        prompts_per_iteration=sizes.ppo_prompts, max_new_tokens=sizes.ppo_new_tokens,
        minibatch_size=sizes.ppo_minibatch, micro_batch_size=sizes.ppo_minibatch, ppo_epochs=1, save_every=0,
        report_to=["none"],
    )  # fmt: skip
    # `engine: hf` alone loads its own copy on the CPU; hand run_ppo one on the GPU instead.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = HFEngine(load_model(policy).to(device), load_tokenizer(policy))
    run_ppo(config, engine=engine)
    rows = [json.loads(line) for line in (work / "out/metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows  # the first iteration warms up
    phases = ("generation", "scoring", "training", "sync")
    seconds = {p: sum(r[f"time/{p}"] for r in timed) / len(timed) for p in phases}
    total = sum(seconds.values())
    return {
        "model": chat_model(work)[1],
        "engine": f"transformers.generate on {device}",
        "iteration": f"{sizes.ppo_prompts} prompts x up to {sizes.ppo_new_tokens} new tokens, GAE, 1 epoch",
        "timed_iterations": len(timed),
        "iteration_s": round(total, 3),
        **{f"{p}_s": round(s, 3) for p, s in seconds.items()},
        **{f"{p}_share": round(s / total, 4) for p, s in seconds.items()},
        **gpu_memory(torch),
    }


def step_model_only(args, sizes: Sizes, work: Path) -> dict:
    """The model's forward, backward and AdamW step alone on one fixed batch, then a kernel profile."""
    import torch

    from align.models import build_model, load_tokenizer
    from align.pretrain.throughput import flops_per_token

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer = load_tokenizer(work.parent / "tokenizer")
    with device:  # initialised where it runs: seconds for 1B parameters, not a CPU's minute
        model = build_model(sizes.preset, tokenizer, seed=0).to(getattr(torch, sizes.dtype))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    batch = torch.randint(len(tokenizer), (sizes.batch_size, sizes.seq_len), device=device)

    def step() -> None:
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(sizes.model_steps):
        step()
    sync()
    seconds = (time.perf_counter() - started) / sizes.model_steps
    tokens_per_s = sizes.batch_size * sizes.seq_len / seconds
    parameters, layers, hidden, attention = model_shape(model)
    peak = peak_flops(args, sizes)

    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if cuda else []
    )
    try:  # the profile is an extra: its failure must not lose the figures above
        with torch.profiler.profile(activities=activities) as profile:
            step()
            sync()
        kernels = top_kernels(profile, cuda)
    except Exception as error:  # noqa: BLE001
        kernels = [{"error": repr(error)}]
    return {
        "preset": sizes.preset,
        "attention": attention,
        "step_s": round(seconds, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu_6n": round(tokens_per_s * 6 * parameters / peak, 4),
        "mfu_attn": round(
            tokens_per_s * flops_per_token(parameters, layers, hidden, sizes.seq_len) / peak, 4
        ),
        "top_kernels": kernels,
        **gpu_memory(torch),
    }


def top_kernels(profile, cuda: bool, count: int = 12) -> list[dict]:
    """The operations (kernels on a GPU) that took the most time in the profiled step."""
    field = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in profile.key_averages() if getattr(e, field, 0) > 0]
    if cuda:  # the kernels themselves, not also the operators that launched them
        events = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")] or events
    total = sum(getattr(e, field) for e in events) or 1
    events.sort(key=lambda e: getattr(e, field), reverse=True)
    return [
        {
            "name": e.key[:120],
            "ms": round(getattr(e, field) / 1000, 3),
            "share": round(getattr(e, field) / total, 4),
        }
        for e in events[:count]
    ]


# --- helpers of the steps ----------------------------------------------------------------------------


def bench():
    """scripts/bench/pretrain.py: its loop-vs-Trainer benchmark functions, reused as they are."""
    spec = importlib.util.spec_from_file_location("bench_pretrain", REPO / "scripts/bench/pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_args(sizes: Sizes) -> argparse.Namespace:
    return argparse.Namespace(preset=sizes.preset, dtype=sizes.dtype, steps=sizes.steps, warmup=sizes.warmup,
                              batch_size=sizes.batch_size, seq_len=sizes.seq_len)  # fmt: skip


def model_shape(model) -> tuple[int, int, int, str]:
    """(parameters, layers, hidden size, attention implementation): what MFU is computed from."""
    from align.models import count_parameters

    config = model.config
    return count_parameters(model), config.num_hidden_layers, config.hidden_size, config._attn_implementation


def peak_flops(args, sizes: Sizes) -> float:
    import torch

    if torch.cuda.is_available():
        return args.peak_tflops * 1e12
    from align.pretrain.throughput import measure_peak_flops  # a CPU has no datasheet figure here

    return measure_peak_flops(torch.device("cpu"), getattr(torch, sizes.dtype))


def gpu_memory(torch) -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def chat_model(work: Path) -> tuple[Path, str]:
    """(directory, description) of the chat model that `prepare` chose."""
    chat = json.loads((work.parent / "chat.json").read_text(encoding="utf-8"))
    return Path(chat["path"]), chat["label"]


# --- the driver: each step in a process of its own, with its own limit ---------------------------------


def run_all(args, sizes: Sizes) -> dict:
    started = time.monotonic()
    deadline = started + (args.budget or sizes.budget)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "check.log"
    log.write_text("", encoding="utf-8")
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "gpu",
        "command": " ".join(sys.argv[1:]),
        "versions": versions(),
        "device": {},
        "steps": {},
        "result": {},
    }
    limits = {**sizes.limits, **dict(parse_limit(item) for item in args.limit)}
    planned = [s for s in args.steps.split(",") if s != "pretrain_compile" or args.compile]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if args.smoke:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for name in planned:
        left = deadline - time.monotonic() - 5  # the report's own seconds
        if name == "pretrain_compile" and not args.smoke and left < 150:
            report["steps"][name] = {"status": "skipped", "error": f"{left:.0f} s left, too few to compile"}
        elif left < 10:
            report["steps"][name] = {"status": "skipped", "error": f"{left:.0f} s left of the budget"}
        else:
            report["steps"][name] = run_step(name, args, work, int(min(limits[name], left)), env, log)
        print(f"[{name}] {summary(report['steps'][name])}", flush=True)
        if name == "prepare":
            report["device"] = report["steps"][name].pop("device", {})
        report["result"] = result(report["steps"])
        report["seconds"] = round(time.monotonic() - started, 1)
        (out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.work:  # a scratch directory of our own; its logs are in check.log
        shutil.rmtree(work, ignore_errors=True)
    return report


def run_step(name: str, args, work: Path, limit: int, env: dict, log: Path) -> dict:
    """Run one step in a new process group; a step that outlives `limit` is killed with its children."""
    step_dir = work / name
    command = [sys.executable, "-u", __file__, "--step", name, "--work", str(work), "--peak_tflops",
               str(args.peak_tflops)] + (["--smoke"] if args.smoke else []) + (
               ["--smollm2", args.smollm2] if args.smollm2 else [])  # fmt: skip
    started = time.monotonic()
    with open(work / f"{name}.log", "w", encoding="utf-8") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    seconds = round(time.monotonic() - started, 1)
    text = (work / f"{name}.log").read_text(encoding="utf-8", errors="replace")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n===== {name}: exit {returncode} after {seconds} s =====\n{text}")
    if name != "prepare":  # keep the prepared inputs, drop the big run directories (1B checkpoints)
        shutil.rmtree(step_dir, ignore_errors=True)
    tail = "\n".join(text.splitlines()[-15:])[-4000:]  # progress bars make long lines
    if returncode is None:
        return {"status": "timed out", "seconds": seconds, "limit_s": limit, "error": tail}
    figures_file = work / f"{name}.json"
    if returncode != 0 or not figures_file.exists():
        return {"status": "failed", "seconds": seconds, "exit": returncode, "error": tail}
    return {"status": "ok", "seconds": seconds, **json.loads(figures_file.read_text())}


def result(steps: dict) -> dict:
    """The RESULT line's figures from the steps that ran (None where a step did not)."""

    def figure(step: str, key: str):
        entry = steps.get(step, {})
        return entry.get(key) if entry.get("status") == "ok" else None

    ours, theirs = figure("pretrain", "tokens_per_s"), figure("pretrain_hf", "tokens_per_s")
    return {
        "mfu_6n": figure("pretrain", "mfu_6n"),
        "mfu_attn": figure("pretrain", "mfu_attn"),
        "tokens_per_s": ours,
        "trainer_ratio": ours / theirs if ours and theirs else None,
        "resume_equal": figure("resume", "resume_equal"),
        "sft_samples_per_s": figure("sft", "samples_per_s"),
        "rm_samples_per_s": figure("rm", "samples_per_s"),
        "ppo_generation_share": figure("ppo", "generation_share"),
    }


def result_line(values: dict) -> str:
    def show(value) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return str(value).lower()
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"

    return "RESULT " + " ".join(f"{k}={show(v)}" for k, v in values.items())


def summary(step: dict) -> str:
    if step["status"] != "ok":
        last = step.get("error", "").strip().splitlines()[-1:] or [""]
        return f"{step['status']} ({step.get('seconds', 0)} s): {last[0][:200]}"
    shown = {k: v for k, v in step.items() if isinstance(v, int | float | bool) and k not in ("status",)}
    return "ok " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def versions() -> dict:
    import importlib.metadata
    import platform

    found = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def parse_limit(item: str) -> tuple[str, int]:
    name, _, seconds = item.partition("=")
    if name not in STEPS or not seconds.isdigit():
        raise argparse.ArgumentTypeError(
            f"--limit {item}: expected STEP=SECONDS with STEP one of {', '.join(STEPS)}"
        )
    return name, int(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks every step runs")
    parser.add_argument("--compile", action="store_true", help="also the pretrain step under torch.compile")
    parser.add_argument(
        "--smollm2", help="SmolLM2-135M's HF directory (from `align import-base`), if present"
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "runs/gpu-check"), help="where gpu.json goes")
    parser.add_argument("--work", help="scratch directory (default: a new temporary one)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to run, in order")
    parser.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS", help="a step's limit")
    parser.add_argument("--budget", type=int, help="seconds for all the steps (default: 460 on a GPU)")
    parser.add_argument(
        "--peak_tflops", type=float, default=H200_BF16_PEAK_TFLOPS, help="the GPU's bf16 peak"
    )
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # one step, in this process
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else GPU
    unknown = [s for s in args.steps.split(",") if s not in STEPS]
    if unknown:
        parser.error(f"--steps: unknown step {unknown[0]!r}; allowed: {', '.join(STEPS)}")
    for item in args.limit:
        parse_limit(item)

    if args.step:
        work = Path(args.work)
        step_dir = work if args.step == "prepare" else work / args.step
        step_dir.mkdir(parents=True, exist_ok=True)
        figures = globals()[f"step_{args.step}"](args, sizes, step_dir)
        (work / f"{args.step}.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
        return

    if not args.smoke:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.stdout.strip() != "True":
            parser.error("no CUDA device here; run with --smoke for the CPU check")
    report = run_all(args, sizes)
    print(result_line(report["result"]))


if __name__ == "__main__":
    main()
