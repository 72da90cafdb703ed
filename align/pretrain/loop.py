"""`align pretrain`: run the phase plan, reading top to bottom as the algorithm does.

Build (tokenizer, sources, model, optimizer; restore a checkpoint when resuming), then for each
phase: set its mixture and optimiser settings, and per step pack a batch, forward, check for a
loss spike (roll back and skip the batch if so), backward, clip, step, log, checkpoint. A phase
ends at its step budget (or when a source runs out under `on_exhausted: stop`) with a protected
phase-end checkpoint; the last phase's model is also saved as a plain HF directory.

Crash recovery is a re-run with `--resume auto`; on a cluster let a supervisor do it, e.g.
`accelerate launch --max_restarts 3 ... -m align.cli pretrain --config r.yaml --resume auto`, or
`until align pretrain --config r.yaml --resume auto; do sleep 10; done` in the job script.

Data parallelism: every process packs the same global batch from the same ledger and trains on
its own slice of rows, so the ledger (saved by the main process) is the same everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from align.checkpoint import (
    CHECKPOINTS_DIR,
    CheckpointManager,
    cpu_copy,
    read_meta,
    rng_state,
    save_pretrained_atomically,
    set_rng_state,
)
from align.config import to_dict
from align.distributed import finish_trackers, make_accelerator
from align.errors import ConfigError, InputError
from align.models import PRESETS, build_model, count_parameters, load_model, load_tokenizer
from align.pretrain.config import PretrainConfig
from align.pretrain.mixture import Ledger, MixtureSampler, SourceExhausted, load_source
from align.pretrain.packing import pack_batch
from align.pretrain.recovery import SpikeDetector
from align.pretrain.schedule import learning_rate
from align.pretrain.throughput import Throughput, flops_per_token, measure_peak_flops

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


@dataclass
class Position:
    """Where the run is: phase index, step within it, global optimizer step, recent losses."""

    phase: int = 0
    phase_step: int = 0
    step: int = 0
    losses: list[float] = field(default_factory=list)
    rollbacks: int = 0


def run_pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) the phase plan; returns the directory of the final model."""
    output_dir = Path(config.output_dir)
    trackers = [t for t in config.report_to if t != "none"]
    accelerator = make_accelerator(log_with=trackers or None, project_dir=str(output_dir))
    world, rank = accelerator.num_processes, accelerator.process_index
    for number, phase in enumerate(config.phases, 1):
        if phase.batch_size % world:
            raise ConfigError(
                f"phases[{number - 1}].batch_size: {phase.batch_size} is not divisible by {world} processes"
            )

    # Build.
    tokenizer = load_tokenizer(config.tokenizer or config.model)
    sources = {s.name: load_source(s) for s in config.sources}
    manager = CheckpointManager(
        output_dir / CHECKPOINTS_DIR, keep=config.keep, protect=lambda m: m.get("phase_done", False)
    )
    start = _start_checkpoint(config, manager)
    model = _initial_model(config, tokenizer)
    optimizer = torch.optim.AdamW(
        _param_groups(model), lr=config.phases[0].lr, betas=tuple(config.phases[0].betas)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    ledger, at = Ledger(), Position()
    if start is not None:
        ledger, at = _restore(start, accelerator, model, optimizer)
        log.info("resumed from %s: phase %d, step %d", start, at.phase + 1, at.step)
    sampler = MixtureSampler(sources, ledger, config.seed)
    detector = SpikeDetector(config.spike_factor, config.spike_window, at.losses)

    def save(phase_done: bool = False, blocking: bool = False) -> None:
        _save(config, accelerator, manager, tokenizer, model, optimizer, ledger, at, phase_done, blocking)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2), encoding="utf-8")
    if config.from_phase is not None and accelerator.is_main_process:
        for moved in manager.rewind(start):
            log.warning(
                "from_phase %d: later checkpoint %s moved aside to %s", config.from_phase, moved.name, moved
            )
    accelerator.wait_for_everyone()
    if start is None:
        save()  # the point a spike before the first save rolls back to
    accelerator.init_trackers("pretrain")

    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    peak = config.peak_flops or measure_peak_flops(accelerator.device, unwrapped.dtype)
    plan_steps = sum(p.steps() for p in config.phases)
    log.info(
        "%d process(es) on %s; %d steps planned over %d phase(s)",
        world,
        accelerator.device,
        plan_steps,
        len(config.phases),
    )
    bar = tqdm(total=plan_steps, initial=at.step, desc="pretrain", disable=not accelerator.is_main_process)
    metrics_file = output_dir / "metrics.jsonl"
    spike_injected = False

    # Loop over phases; a rollback may move `at` back, even into the previous phase.
    while at.phase < len(config.phases):
        phase = config.phases[at.phase]
        total = phase.steps()
        sampler.start_phase(phase.mixture, phase.on_exhausted, at.phase)
        decay, no_decay = optimizer.param_groups
        for group in (decay, no_decay):
            group["betas"] = tuple(phase.betas)
        decay["weight_decay"] = phase.weight_decay
        rows = phase.batch_size // world
        cfg = unwrapped.config
        throughput = Throughput(
            flops_per_token(
                count_parameters(unwrapped), cfg.num_hidden_layers, cfg.hidden_size, phase.seq_len
            ),
            peak,
        )
        log.info(
            "phase %d/%d (%s): %d steps, mixture %s",
            at.phase + 1,
            len(config.phases),
            phase.name,
            total,
            phase.mixture,
        )
        rolled_back = False
        while at.phase_step < total:
            if at.step == config.test_kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # TEST ONLY: a hard crash at this step
            try:
                batch = pack_batch(
                    sampler,
                    _tokenizer_fn(tokenizer),
                    tokenizer.eos_token_id,
                    phase.batch_size,
                    phase.seq_len,
                    config.document_attention,
                )
            except SourceExhausted:
                break
            ledger.batches += 1
            if ledger.batches in ledger.skip_batches:
                ledger.skipped.append({"batch": ledger.batches, "step": at.step, "ids": batch.ids})
                log.warning("batch %d skipped (it caused a loss spike)", ledger.batches)
                continue
            lr = learning_rate(at.phase_step, total, phase.lr, phase.warmup_ratio, phase.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            local = slice(rank * rows, (rank + 1) * rows)
            input_ids = batch.input_ids[local].to(accelerator.device)
            positions = (
                None if batch.position_ids is None else batch.position_ids[local].to(accelerator.device)
            )
            loss = model(input_ids=input_ids, labels=input_ids, position_ids=positions).loss
            loss_value = accelerator.reduce(loss.detach(), "mean").item()
            if at.step == config.test_spike_at_step and not spike_injected:
                spike_injected = True
                loss_value *= 1000.0
            if detector.is_spike(loss_value):
                _rollback(config, accelerator, manager, model, optimizer, ledger, at, loss_value)
                ledger, at = _restore(manager.latest(), accelerator, model, optimizer, keep=(ledger, at))
                sampler = MixtureSampler(sources, ledger, config.seed)
                detector = SpikeDetector(config.spike_factor, config.spike_window, at.losses)
                bar.n = at.step
                rolled_back = True
                break
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), phase.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ledger.consumed.extend(batch.ids)
            detector.record(loss_value)
            at.losses = detector.history
            at.step += 1
            at.phase_step += 1
            tokens_per_s, mfu = throughput.update(rows * phase.seq_len)
            bar.update(1)
            bar.set_postfix(
                phase=at.phase + 1, loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_s:,.0f}", mfu=f"{mfu:.1%}"
            )
            if at.step % config.logging_steps == 0:
                metrics = {
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s_per_device": tokens_per_s,
                    "mfu": mfu,
                    "phase": at.phase + 1,
                }
                accelerator.log(metrics, step=at.step)
                if accelerator.is_main_process:
                    with open(metrics_file, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps({"step": at.step, **metrics}) + "\n")
            if at.phase_step < total and at.step % config.save_steps == 0:
                save()
        if rolled_back:
            continue
        if at.phase_step < total:
            log.warning(
                "phase %d ended early at step %d of %d (a source ran out)", at.phase + 1, at.phase_step, total
            )
        save(phase_done=True)
        at.phase, at.phase_step = at.phase + 1, 0
    bar.close()
    manager.close()
    final = config.final_path
    weights, _ = full_state_dicts(model, None)
    if accelerator.is_main_process:
        save_pretrained_atomically(
            final, accelerator.unwrap_model(model, keep_torch_compile=False), tokenizer, weights
        )
    accelerator.wait_for_everyone()
    finish_trackers(accelerator)
    log.info("pretraining finished at step %d; model in %s", at.step, final)
    return final


def _tokenizer_fn(tokenizer):
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def _initial_model(config: PretrainConfig, tokenizer):
    if Path(config.model).is_dir():
        return load_model(config.model, dtype=config.dtype)
    assert config.model in PRESETS
    longest = max(p.seq_len for p in config.phases)
    model = build_model(config.model, tokenizer, seed=config.seed, max_position_embeddings=max(2048, longest))
    return model.to(getattr(torch, config.dtype))


def _param_groups(model) -> list[dict]:
    """Weight decay on matrices only; norms and biases are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]


def _start_checkpoint(config: PretrainConfig, manager: CheckpointManager) -> Path | None:
    if config.from_phase is not None:
        if config.from_phase == 1:
            return None
        wanted = config.from_phase - 2  # 0-based index of the phase that must have ended
        for checkpoint in reversed(manager.list()):
            meta = read_meta(checkpoint)
            if meta.get("phase_done") and meta.get("phase") == wanted:
                return checkpoint
        raise InputError(f"{manager.root}: no checkpoint ended phase {config.from_phase - 1}")
    latest = manager.latest()
    if config.resume == "auto":
        if latest is None:
            log.info("resume: auto found no checkpoint in %s; starting fresh", manager.root)
        return latest
    if latest is not None:
        raise InputError(
            f"{manager.root}: holds checkpoints; pass --resume auto to continue, or use a new output_dir"
        )
    return None


def full_state_dicts(model, optimizer) -> tuple[dict, dict | None]:
    """The model's (and optimizer's) whole state on the main process, CPU copies; {} elsewhere.

    A collective under FSDP2: every process calls it.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # On one process the "offloaded" tensors can be the live ones: copy them (training goes on
    # while a checkpoint thread writes them).
    weights = cpu_copy(get_model_state_dict(model, options=options))
    if optimizer is None:
        return weights, None
    return weights, cpu_copy(get_optimizer_state_dict(model, optimizer, options=options))


def _save(
    config, accelerator, manager, tokenizer, model, optimizer, ledger, at, phase_done, blocking
) -> None:
    """Snapshot everything now; the main process writes it on the checkpoint thread.

    Weights and optimizer state are gathered whole onto the main process whatever shards them
    (FSDP2, DDP, one process, `torch.compile`): torch's distributed state-dict API, a collective
    every process joins, keyed by parameter names without wrapper prefixes.
    """
    accelerator.wait_for_everyone()
    weights, optimizer_state = full_state_dicts(model, optimizer)
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if unwrapped.config.tie_word_embeddings:  # the head is the embedding: stored once
        weights.pop("lm_head.weight", None)
    weights = {name: tensor.contiguous() for name, tensor in weights.items()}
    rng = rng_state()
    ledger_text = ledger.to_json()
    phase = config.phases[min(at.phase, len(config.phases) - 1)]
    schedule = {"phase": at.phase, "phase_step": at.phase_step, "total_steps": phase.steps(), "peak_lr": phase.lr,
                "warmup_ratio": phase.warmup_ratio, "min_lr_ratio": phase.min_lr_ratio}  # fmt: skip
    meta = {"phase": at.phase, "phase_step": at.phase_step, "phase_done": phase_done, "losses": list(at.losses),
            "rollbacks": at.rollbacks}  # fmt: skip
    step = at.step
    kill = config.test_kill_in_checkpoint == step

    def write(directory: Path) -> None:
        unwrapped.config.save_pretrained(directory)
        unwrapped.generation_config.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        save_file(weights, str(directory / WEIGHTS), metadata={"format": "pt"})
        if kill:  # TEST ONLY: die with the checkpoint half written
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save(optimizer_state, directory / "optimizer.pt")
        torch.save(rng, directory / "rng.pt")
        (directory / "scheduler.json").write_text(json.dumps(schedule), encoding="utf-8")
        (directory / "ledger.json").write_text(ledger_text, encoding="utf-8")

    manager.save(step, write, meta, blocking=blocking)


def _restore(path: Path, accelerator, model, optimizer, keep: tuple[Ledger, Position] | None = None):
    """Load a checkpoint into the (prepared) model and optimizer; returns its ledger and position."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    weights = {}
    for file in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    tied = {"lm_head.weight"} if unwrapped.config.tie_word_embeddings else set()
    expected = set(unwrapped.state_dict()) - tied
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected - tied)
    if missing or unexpected:
        raise InputError(
            f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    # Every process holds the whole state; each keeps its own shard of it (FSDP2) or all of it.
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    if tied:
        unwrapped.tie_weights()
    saved_optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    set_optimizer_state_dict(model, optimizer, saved_optimizer, options=options)
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    ledger = Ledger.from_json((path / "ledger.json").read_text(encoding="utf-8"))
    meta = read_meta(path)
    at = Position(meta["phase"], meta["phase_step"], meta["step"], meta["losses"], meta.get("rollbacks", 0))
    if meta["phase_done"]:
        at.phase, at.phase_step = at.phase + 1, 0
    if keep is not None:  # a rollback: remember what to skip and how often we rolled back
        old_ledger, old_at = keep
        ledger.skip_batches = sorted(set(ledger.skip_batches) | set(old_ledger.skip_batches))
        ledger.events = old_ledger.events
        at.rollbacks = old_at.rollbacks
    return ledger, at


def _rollback(config, accelerator, manager, model, optimizer, ledger, at, loss_value) -> None:
    """Mark the batch that spiked for skipping and wait until `latest` is complete."""
    at.rollbacks += 1
    if at.rollbacks > config.max_rollbacks:
        raise InputError(
            f"{config.output_dir}: loss spikes persist after {config.max_rollbacks} rollbacks (max_rollbacks)"
        )
    ledger.skip_batches = sorted({*ledger.skip_batches, ledger.batches})
    message = f"loss spike {loss_value:.4g} at step {at.step} (batch {ledger.batches}): rolling back to the last checkpoint"
    ledger.events.append(message)
    log.warning(message)
    manager.wait()
    accelerator.wait_for_everyone()
