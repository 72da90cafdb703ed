"""Configuration of `align dpo`: offline preference optimisation with TRL's trainers.

One stage, one switch (`method`): DPO and its loss variants (TRL's `DPOTrainer`), KTO on unpaired
good/bad labels (`KTOTrainer`), ORPO (`trl.experimental.orpo`) and SimPO (`trl.experimental.cpo`'s
`CPOTrainer` with `loss_type="simpo"`). Light at import (no torch, no TRL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from align.config import check_model_dir, check_positive, check_range
from align.errors import ConfigError
from align.finetune_config import FinetuneConfig
from align.outputs import check_output_path

DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
"""TRL 1.16's `DPOConfig.loss_type` values (tests/test_dpo.py checks this list against TRL's)."""

KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")
"""TRL 1.16's `KTOConfig.loss_type` values."""

REFERENCE_FREE_LOSS_TYPES = ("sigmoid", "hinge", "ipo")
"""The DPO losses TRL computes without a reference: `CPOTrainer`'s, with its NLL term off."""

SMOOTHED_LOSS_TYPES = ("robust", "exo_pair", "aot", "aot_unpaired")
"""The DPO losses that read `label_smoothing` (TRL ignores it in the others)."""


@dataclass(kw_only=True)
class DPOStageConfig(FinetuneConfig):
    """Optimise a policy directly on preferences, from the SFT checkpoint, without a reward model.

    Input (`train_file`, `eval_file`): TRL preference rows, as `align label export` writes them:
    `prompt` (a string or a list of messages), `chosen` and `rejected` (strings or lists of
    assistant messages), optional `criterion` and `margin` (read and checked as `align rm` does,
    not used by the losses). For `method: kto` the rows may instead be unpaired: `prompt`,
    `completion` and a boolean `label` (true: a good reply). A file holds one kind or the other;
    bad rows are skipped and logged with file and line (see `max_bad_fraction`). Without an
    `eval_file`, `eval_fraction` of the rows is held out by `seed` exactly as `align rm` holds
    them out (copies of a pair together; unpaired rows by prompt), so the two stages, given the
    same file, fraction and seed, are scored on the same pairs.

    Output at `output_dir`: the policy (HF format), `dpo_metrics.json` (the trainer's last logged
    losses and rewards) and `eval.json`: the held-out implicit-reward pairwise accuracy, the share
    of held-out pairs where r(chosen) > r(rejected) with r = β·(log π(y|x) − log π_ref(y|x)) (β·log π
    without a reference), with its n and standard error.
    """

    method: Literal["dpo", "kto", "orpo", "simpo"] = "dpo"
    """dpo: TRL's DPOTrainer (`loss_type` picks the variant); kto: KTOTrainer, on unpaired labels
    or on pairs split into a good and a bad reply (TRL's `unpair_preference_dataset`); orpo:
    odds-ratio preference optimisation (no reference); simpo: CPOTrainer's SimPO loss with its NLL
    term off (no reference, length-normalised rewards, margin `simpo_gamma`)."""
    loss_type: str | None = None
    """dpo: one of TRL's DPO losses (null: sigmoid, the DPO paper's), e.g. ipo, hinge, robust;
    kto: kto or apo_zero_unpaired (null: kto); orpo and simpo have one loss each (leave null)."""
    beta: float = 0.1
    """β: dpo/kto, how far the policy may move from the reference (higher: less); ipo, the
    regularisation τ; orpo, the weight λ of the odds-ratio term; simpo, the reward scale."""
    label_smoothing: float = 0.0
    """The probability that a label is flipped, for the losses that model it (robust, in
    [0, 0.5); exo_pair, > 0; aot, aot_unpaired); refused with the others, which ignore it."""
    reference: Path | None = None
    """The reference policy π_ref (an HF model directory); null: the starting `model`."""
    reference_free: bool = False
    """DPO without a reference (log π_ref taken as 0): sigmoid, hinge or ipo, through TRL's `CPOTrainer`
    with its NLL term off, since TRL 1.16's `DPOTrainer` always has a reference."""
    simpo_gamma: float = 0.5
    """simpo: the target reward margin γ."""
    desirable_weight: float = 1.0
    """kto: weight of the good replies' losses (raise it when bad replies outnumber good ones)."""
    undesirable_weight: float = 1.0
    """kto: weight of the bad replies' losses."""
    learning_rate: float = 1e-6
    """Peak learning rate (AdamW); TRL's default for DPO. Preference losses move a policy fast."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (TRL's default): less memory, about a third more time."""
    bf16_autocast: bool = False
    """Forward and backward passes in bfloat16 autocast over float32 weights and optimizer state
    (the HF Trainer's `bf16`): ~2.8x faster on a CPU that multiplies bf16 (SmolLM2-135M here),
    without losing lr-1e-6 updates to bfloat16 weights as `dtype: bfloat16` would. The held-out
    log-probs are computed in the weights' precision either way."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference is not None:
            check_model_dir("reference", self.reference)
            check_output_path("output_dir", self.output_dir, [self.reference])
        check_positive("beta", self.beta)
        check_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        check_range("simpo_gamma", self.simpo_gamma, 0.0)
        check_positive("desirable_weight", self.desirable_weight)
        check_positive("undesirable_weight", self.undesirable_weight)
        allowed = {"dpo": DPO_LOSS_TYPES, "kto": KTO_LOSS_TYPES}.get(self.method, ())
        if self.loss_type is not None and self.loss_type not in allowed:
            if not allowed:
                raise ConfigError(f"loss_type: {self.method} has one loss; leave loss_type null")
            raise ConfigError(
                f"loss_type: {self.loss_type!r} is not a {self.method} loss; allowed: {', '.join(allowed)}"
            )
        if self.reference_free:
            if self.method != "dpo":
                raise ConfigError(
                    f"reference_free: only for method dpo ({self.method} "
                    + ("has no reference anyway)" if self.method in ("orpo", "simpo") else "needs one)")
                )
            if self.loss not in REFERENCE_FREE_LOSS_TYPES:
                raise ConfigError(
                    f"reference_free: TRL has no reference-free {self.loss!r} loss; "
                    f"allowed loss_type: {', '.join(REFERENCE_FREE_LOSS_TYPES)}"
                )
        if self.reference is not None and (self.reference_free or self.method in ("orpo", "simpo")):
            raise ConfigError(f"reference: {self.method} without a reference cannot use one; leave it null")
        if self.label_smoothing > 0 and (self.loss not in SMOOTHED_LOSS_TYPES or self.reference_free):
            raise ConfigError(
                f"label_smoothing: the {self.loss} loss ignores it; "
                f"it applies to the dpo losses {', '.join(SMOOTHED_LOSS_TYPES)}"
            )
        if self.loss == "robust" and self.label_smoothing >= 0.5:
            raise ConfigError("label_smoothing: the robust loss needs it below 0.5 (a flip probability)")
        if self.loss == "exo_pair" and self.label_smoothing == 0:
            raise ConfigError("label_smoothing: the exo_pair loss needs it > 0 (the EXO paper uses 1e-3)")
        if self.loss == "kto" and self.batch_size < 2:
            raise ConfigError(
                "batch_size: kto estimates its KL term from the other replies of a batch; needs >= 2"
            )

    @property
    def loss(self) -> str:
        """The loss that trains: `loss_type`, or the method's default (sigmoid, kto), or the
        method's one loss (orpo, simpo)."""
        return self.loss_type or {"dpo": "sigmoid", "kto": "kto"}.get(self.method, self.method)

    @property
    def has_reference(self) -> bool:
        """Whether the loss compares the policy with a reference policy."""
        return self.method in ("dpo", "kto") and not self.reference_free

    @property
    def length_normalised(self) -> bool:
        """Whether the method's reward is the mean token log-prob rather than the sum (ORPO,
        SimPO, and reference-free IPO, as TRL's trainers compute them)."""
        return self.method in ("orpo", "simpo") or (self.reference_free and self.loss == "ipo")
