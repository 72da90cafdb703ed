"""The fields SFT and the reward model share: data, schedule, checkpoints, LoRA/QLoRA.

Both stages run on TRL trainers (HF Trainer underneath); `trainer_arguments()` turns these fields
into the keyword arguments of TRL's `SFTConfig`/`RewardConfig`. Light at import (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from align.checkpoint import CHECKPOINTS_DIR
from align.config import check_file, check_model_dir, check_positive, check_range
from align.errors import ConfigError
from align.outputs import check_output_path


@dataclass(kw_only=True)
class FinetuneConfig:
    """Shared fields of the TRL-based stages (`align sft`, `align rm`)."""

    model: Path
    """The starting model: an HF-format directory with its tokenizer (nothing is downloaded)."""
    train_file: Path
    """Training data, JSONL or Parquet in TRL's format (see the stage's docs)."""
    output_dir: Path
    """Where the final model goes (at the root); checkpoints go under `checkpoints/` inside it."""
    eval_file: Path | None = None
    """Held-out data; when null, `eval_fraction` of `train_file` is held out instead."""
    eval_fraction: float = 0.1
    """Fraction of `train_file` held out for evaluation when no `eval_file` is given."""
    max_length: int = 512
    """Longest tokenised sequence (with packing: the packed row length)."""
    truncate: bool = False
    """Accept examples longer than `max_length`: SFT trains on their first `max_length` tokens, the
    reward model leaves such pairs out (TRL's RewardTrainer cannot cut a pair). Otherwise they are
    counted, and more than `max_bad_fraction` of them refuses the data."""
    epochs: float = 1.0
    """Passes over the training data (ignored when `max_steps` > 0)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run `epochs`)."""
    batch_size: int = 16
    """Sequences (or packed rows, or preference pairs) per device per step."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    learning_rate: float = 1e-4
    """Peak learning rate (AdamW)."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup: float = 0.05
    """Warm-up: a fraction of the steps when < 1, else a number of steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    eval_steps: int = 100
    """Evaluate on the held-out split every this many steps (and at the end)."""
    save_steps: int = 100
    """Write a resumable checkpoint every this many steps."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    logging_steps: int = 10
    """Log loss and learning rate every this many steps."""
    resume: bool = True
    """Resume from the last checkpoint under `output_dir/checkpoints` when there is one."""
    lora: bool = False
    """Train LoRA adapters (PEFT) instead of all weights; the adapter is saved at `output_dir`."""
    qlora: bool = False
    """LoRA on a 4-bit quantised base (bitsandbytes; needs a CUDA GPU)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters (Llama's attention and MLP projections)."""
    max_bad_fraction: float = 0.05
    """Bad rows are skipped (and logged with file and line); more than this fraction refuses the file."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the weights during training."""
    seed: int = 0
    """Seed for initialisation, shuffling and the held-out split."""
    report_to: list[str] = field(default_factory=lambda: ["none"])
    """Trackers (`tensorboard`, `wandb`, ...) or `none`."""

    def __post_init__(self) -> None:
        check_output_path("output_dir", self.output_dir, [self.model, self.train_file, self.eval_file])
        check_model_dir("model", self.model)
        check_file("train_file", self.train_file)
        check_file("eval_file", self.eval_file)
        check_range("eval_fraction", self.eval_fraction, 0.0, 0.9)
        check_range("max_bad_fraction", self.max_bad_fraction, 0.0, 1.0)
        check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
        check_range("warmup", self.warmup, 0.0)
        check_range("weight_decay", self.weight_decay, 0.0)
        for key in (
            "max_length",
            "epochs",
            "batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "eval_steps",
            "save_steps",
            "save_total_limit",
            "logging_steps",
            "lora_r",
            "lora_alpha",
        ):
            check_positive(key, getattr(self, key))
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps: must be -1 (use epochs) or > 0, got {self.max_steps}")
        if self.eval_file is None and self.eval_fraction == 0:
            raise ConfigError(
                "eval_fraction: must be > 0 when no eval_file is given (eval loss needs a split)"
            )
        if self.qlora and not self.lora:
            raise ConfigError("qlora: needs lora: true (QLoRA trains LoRA adapters on a 4-bit base)")

    @property
    def checkpoint_dir(self) -> Path:
        """Where the HF Trainer writes its resumable `checkpoint-N` folders."""
        return Path(self.output_dir) / CHECKPOINTS_DIR

    def trainer_arguments(self) -> dict[str, Any]:
        """Keyword arguments shared by TRL's `SFTConfig` and `RewardConfig`."""
        from align.distributed import use_cpu

        return dict(
            output_dir=str(self.checkpoint_dir),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup,
            weight_decay=self.weight_decay,
            eval_strategy="steps",
            eval_steps=self.eval_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            logging_steps=self.logging_steps,
            max_length=self.max_length,
            seed=self.seed,
            data_seed=self.seed,
            bf16=self.dtype == "bfloat16",
            use_cpu=use_cpu(),
            report_to=self.report_to,
            ddp_find_unused_parameters=False,
        )

    def peft_config(self, task_type: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any:
        """The PEFT `LoraConfig`, or None for full fine-tuning."""
        if not self.lora:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
            task_type=task_type,
        )

    def model_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` keyword arguments: precision, and 4-bit quantisation for QLoRA."""
        import torch

        kwargs: dict[str, Any] = {"dtype": getattr(torch, self.dtype)}
        if self.qlora:
            if not torch.cuda.is_available():
                raise ConfigError("qlora: needs a CUDA GPU (bitsandbytes 4-bit); use lora: true on CPU")
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        return kwargs

    def last_checkpoint(self) -> str | None:
        """The checkpoint to resume from, if resuming is on and one exists."""
        if not self.resume or not self.checkpoint_dir.is_dir():
            return None
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(self.checkpoint_dir))
