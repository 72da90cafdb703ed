"""The `align pretrain` config: sources, a phase plan, checkpoints, recovery and logging.

Light on purpose (no torch here) so `align pretrain --help` is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError
from align.outputs import check_output_path


@dataclass
class SourceConfig:
    """One data source: JSONL/Parquet files with a `text` field (optionally `id`, `lang`)."""

    name: str
    """How phases refer to this source in their `mixture`."""
    path: Path
    """A .jsonl/.jsonl.gz/.parquet file, or a directory searched recursively for them."""
    lang: list[str] | None = None
    """Keep only rows whose `lang` field is one of these (e.g. the corpus stage's `en`, `zh`)."""
    exclude_lang: list[str] | None = None
    """Drop rows whose `lang` field is one of these (e.g. `others` = everything but en and zh)."""

    def __post_init__(self) -> None:
        check_exists("path", self.path)


@dataclass
class PhaseConfig:
    """One phase of the plan: its data mixture, budget and optimisation settings."""

    mixture: dict[str, float]
    """Source name -> weight (normalised); the phase draws documents in these proportions."""
    name: str = ""
    """A label for logs (default: phase1, phase2, ...)."""
    max_steps: int | None = None
    """Optimizer steps in this phase (give this or max_tokens)."""
    max_tokens: int | None = None
    """Token budget of the phase; steps = ceil(max_tokens / (batch_size * seq_len))."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to this fraction of the peak at the phase's last step."""
    warmup_ratio: float = 0.025
    """Fraction of the phase's steps spent warming up linearly to the peak."""
    batch_size: int = 8
    """Global batch in packed sequences per optimizer step (split over processes)."""
    seq_len: int = 256
    """Tokens per packed sequence."""
    weight_decay: float = 0.1
    """AdamW weight decay (matrices only; norms and biases get none)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    on_exhausted: Literal["stop", "new_epoch"] = "new_epoch"
    """When a source runs out: end the phase, or start a new (reshuffled) epoch of that source."""

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ConfigError("max_steps: give exactly one of max_steps and max_tokens")
        if self.max_steps is not None:
            check_positive("max_steps", self.max_steps)
        if self.max_tokens is not None:
            check_positive("max_tokens", self.max_tokens)
        if not self.mixture:
            raise ConfigError("mixture: needs at least one source")
        for source, weight in self.mixture.items():
            check_range(f"mixture.{source}", weight, 0.0)
        if sum(self.mixture.values()) <= 0:
            raise ConfigError("mixture: the weights must not all be zero")
        check_positive("lr", self.lr)
        check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check_positive("batch_size", self.batch_size)
        check_positive("seq_len", self.seq_len)
        check_range("weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: expected two values in [0, 1), got {self.betas!r}")
        check_positive("max_grad_norm", self.max_grad_norm)

    def steps(self) -> int:
        """Optimizer steps of the phase."""
        if self.max_steps is not None:
            return self.max_steps
        tokens_per_step = self.batch_size * self.seq_len
        return -(-self.max_tokens // tokens_per_step)  # type: ignore[operator]


@dataclass
class PretrainConfig:
    """Multi-phase pretraining with a no-resample data ledger, packing, checkpoints and recovery."""

    model: str
    """A preset of align.models.PRESETS (tiny, m30, m135, 1b), or an HF model directory to continue from."""
    sources: list[SourceConfig]
    """The data sources that phases mix."""
    phases: list[PhaseConfig]
    """The phase plan, run in order."""
    output_dir: Path
    """Run directory: checkpoints/, metrics.jsonl, TensorBoard logs, final/."""
    tokenizer: Path | None = None
    """Tokenizer directory (required with a preset; default: the model directory)."""
    final_dir: Path | None = None
    """Where the last phase's model is saved as a plain HF directory (default: output_dir/final)."""
    seed: int = 0
    """Seeds model initialisation and the per-source shuffles."""
    document_attention: bool = False
    """Reset position ids after each EOS so attention stays within a document (packed-sequence mask)."""
    save_steps: int = 100
    """Write a checkpoint every this many optimizer steps (and always at each phase end)."""
    keep: int = 3
    """Keep the last K step checkpoints (phase-end checkpoints are always kept)."""
    resume: Literal["no", "auto"] = "no"
    """`auto`: continue from the checkpoint `latest` names (a fresh start when there is none)."""
    from_phase: int | None = None
    """Start phase N (1-based) from the checkpoint that ended phase N-1."""
    spike_factor: float = 3.0
    """A loss above this multiple of the recent median (or NaN/inf) is a spike: roll back and skip."""
    spike_window: int = 20
    """How many recent losses the median is taken over (detection starts after 5)."""
    max_rollbacks: int = 5
    """Give up (error) after this many spike rollbacks in one run."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Model weights' precision (bfloat16 on GPUs)."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device for MFU; measured with a matmul benchmark when not given."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Trackers for Accelerate (tensorboard, wandb, ...; `none` for none)."""
    logging_steps: int = 1
    """Log metrics every this many steps."""
    test_kill_at_step: int | None = None
    """TEST ONLY: SIGKILL this process when it reaches this global step (crash-recovery tests)."""
    test_kill_in_checkpoint: int | None = None
    """TEST ONLY: SIGKILL this process halfway through writing the checkpoint of this step."""
    test_spike_at_step: int | None = None
    """TEST ONLY: multiply the loss seen at this step by 1000, once, to trigger spike recovery."""

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources: at least one source is required")
        model_dir = Path(self.model) if Path(self.model).is_dir() else None
        check_output_path(
            "output_dir", self.output_dir, [model_dir, self.tokenizer, *(s.path for s in self.sources)]
        )
        if not self.phases:
            raise ConfigError("phases: at least one phase is required")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"sources: duplicate source names in {names}")
        for number, phase in enumerate(self.phases, 1):
            phase.name = phase.name or f"phase{number}"
            unknown = [k for k in phase.mixture if k not in names]
            if unknown:
                raise ConfigError(
                    f"phases[{number - 1}].mixture.{unknown[0]}: unknown source; allowed: {', '.join(names)}"
                )
        check_positive("save_steps", self.save_steps)
        check_positive("keep", self.keep)
        check_positive("spike_factor", self.spike_factor)
        check_range("spike_window", self.spike_window, 5)
        check_range("max_rollbacks", self.max_rollbacks, 0)
        check_positive("logging_steps", self.logging_steps)
        if self.from_phase is not None:
            check_range("from_phase", self.from_phase, 1, len(self.phases))
            if self.resume == "auto":
                raise ConfigError("from_phase: cannot be combined with resume: auto")
        if self.tokenizer is not None:
            check_exists("tokenizer", self.tokenizer)
        if not Path(self.model).is_dir():
            from align.models import PRESETS

            if self.model not in PRESETS:
                raise ConfigError(
                    f"model: {self.model!r} is neither a model directory nor a preset ({', '.join(PRESETS)})"
                )
            if self.tokenizer is None:
                raise ConfigError("tokenizer: required when model is a preset")

    @property
    def final_path(self) -> Path:
        return Path(self.final_dir) if self.final_dir is not None else Path(self.output_dir) / "final"
