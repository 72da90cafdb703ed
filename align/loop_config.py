"""The `align loop` config: rounds of samples -> labels -> reward model -> policy update (light: no torch)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from align.config import check_exists, check_positive, check_range, coerce
from align.errors import ConfigError
from align.outputs import check_output_path

STAGE_CONFIGS = {
    "label_add": "rewards.label_config:LabelAddConfig",
    "label_judge": "rewards.label_config:LabelJudgeConfig",
    "label_export": "rewards.label_config:LabelExportConfig",
    "rm": "rewards.reward_config:RewardStageConfig",
    "ppo": "align.ppo.config:PPOConfig",
    "dpo": "align.dpo_config:DPOStageConfig",
}
"""Each per-round settings field of `LoopConfig` and the config class of the stage it sets."""

SET_BY_THE_LOOP = {
    "label_add": ("store", "prompts", "prompt_limit", "checkpoints", "jsonl", "reward_model"),
    "label_judge": ("store",),
    "label_export": ("store", "output", "format"),
    "rm": ("model", "train_file", "eval_file", "output_dir"),
    "ppo": ("policy", "reward_model", "eval_prompts", "eval_limit", "eval_samples_per_prompt", "output_dir"),
    "dpo": ("model", "train_file", "eval_file", "output_dir"),
}
"""The fields the loop fills in each round (paths between the rounds' stages): not settable."""


@dataclass
class LoopConfig:
    """Rounds of RLHF as one command. Each round, in its own directory `round-N/`: sample the
    current policy on new prompts (`align label add`, k candidates each), label them (the
    programmatic judge, or people in the app), export, train the reward model (from the previous
    round's or from the starting policy), update the policy against it (`align ppo`, or `align
    dpo` on the labels), and score the result on held-out prompts. A finished round is skipped
    when the loop runs again; so is a finished stage of an unfinished round."""

    policy: Path
    """The starting policy (an SFT checkpoint, HF directory): round 1 samples it, and it is every
    round's PPO reference (KL) unless `ppo.reference` names another. DPO's reference is the round's
    own starting policy (iterative DPO) unless `dpo.reference` names one."""
    prompts: Path
    """Prompts (JSONL, one {"prompt": ...} per line) to sample candidates for: round N takes the
    N-th `prompts_per_round` of them (wrapping around). PPO trains on the whole file unless
    `ppo.prompts` names another."""
    eval_prompts: Path
    """Held-out prompts (same format) the policy is scored on each round: fresh samples of the
    starting policy and of the round's policy, mean score under the round's reward model and the
    rule/checker rate (`align/ppo/evaluate.py`)."""
    output_dir: Path
    """The loop's directory: `round-1/`, `round-2/`, ..., the label store (unless `store` is set)
    and the per-round table `loop.md` / `loop.json`."""
    rounds: int = 2
    """Rounds to run (raise it and run again to add rounds to a finished loop)."""
    prompts_per_round: int = 64
    """Prompts sampled per round (each gets `label_add.k` candidates)."""
    labeller: Literal["judge", "people"] = "judge"
    """Who labels: `judge` (the programmatic judge, `align label judge`) or `people` (in `align
    label serve`: the loop queues the round's comparisons, stops and says so; run it again once
    they are labelled)."""
    update: Literal["ppo", "dpo"] = "ppo"
    """The policy update: `ppo` against the round's reward model, or `dpo` on the labels so far."""
    rm_init: Literal["previous", "policy"] = "previous"
    """Start each round's reward model from the previous round's (`previous`; round 1 from the
    policy) or from the starting policy every round (`policy`: a new head each time)."""
    store: str | None = None
    """SQLAlchemy URL of the label store (null: sqlite:///<output_dir>/labels.sqlite); people
    label in the app on this store."""
    rm_eval_fraction: float = 0.15
    """Share of the labelled pairs held out from the reward model (by a hash of the pair, so a pair
    stays on its side in every round, and a reward model started from the previous one is never
    scored on pairs it was trained on)."""
    eval_limit: int = 100
    """How many of `eval_prompts` the policies are scored on."""
    eval_samples_per_prompt: int = 2
    """Fresh samples per held-out prompt (at the update's temperature and length)."""
    seed: int = 0
    """Seed of the first round; round N's sampling and update use seed + N - 1."""
    accelerate_config: Path | None = None
    """Launch the training stages with `accelerate launch --config_file` this."""
    label_add: dict[str, Any] = field(default_factory=dict)
    """`align label add` settings for every round (k, max_new_tokens, temperature, engine,
    select, budget, annotators, overlap, ...). With `select: uncertain`, round N > 1 ranks the
    candidates by round N-1's reward model; round 1 has none and queues at random."""
    label_judge: dict[str, Any] = field(default_factory=dict)
    """`align label judge` settings (labeller `judge`)."""
    label_export: dict[str, Any] = field(default_factory=dict)
    """`align label export` settings (criteria, min_margin, min_gold_accuracy, ...)."""
    rm: dict[str, Any] = field(default_factory=dict)
    """`align rm` settings for every round (learning_rate, epochs, batch_size, max_length, ...)."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """`align ppo` settings for every round (iterations, engine, learning_rate, advantage, ...)."""
    dpo: dict[str, Any] = field(default_factory=dict)
    """`align dpo` settings for every round (update `dpo`: beta, learning_rate, epochs, ...)."""

    def __post_init__(self) -> None:
        check_output_path("output_dir", self.output_dir, [self.policy, self.prompts, self.eval_prompts])
        check_exists("policy", self.policy)
        check_exists("prompts", self.prompts)
        check_exists("eval_prompts", self.eval_prompts)
        check_exists("accelerate_config", self.accelerate_config)
        check_positive("rounds", self.rounds)
        check_positive("prompts_per_round", self.prompts_per_round)
        check_positive("eval_limit", self.eval_limit)
        check_positive("eval_samples_per_prompt", self.eval_samples_per_prompt)
        check_range("rm_eval_fraction", self.rm_eval_fraction, 0.01, 0.9)
        if self.store is not None and "://" not in self.store:
            raise ConfigError(
                f"store: expected an SQLAlchemy URL such as sqlite:///labels.sqlite, got {self.store!r}"
            )
        for name in STAGE_CONFIGS:
            check_settings(name, getattr(self, name))

    @property
    def store_url(self) -> str:
        """The label store's URL."""
        return self.store or f"sqlite:///{Path(self.output_dir).resolve() / 'labels.sqlite'}"


def check_settings(name: str, settings: dict[str, Any]) -> None:
    """A per-round settings mapping names fields of its stage's config, each of the right type;
    the fields the loop fills in are refused. Ranges and files are checked when the round's
    stage loads its config, before it runs."""
    if not settings:
        return
    from align.cli import resolve

    cls = resolve(STAGE_CONFIGS[name])
    hints = typing.get_type_hints(cls)
    allowed = sorted(
        f.name for f in dataclasses.fields(cls) if f.init and f.name not in SET_BY_THE_LOOP[name]
    )
    for key, value in settings.items():
        if key in SET_BY_THE_LOOP[name]:
            raise ConfigError(f"{name}.{key}: set by the loop each round; allowed: {', '.join(allowed)}")
        if key not in allowed:
            raise ConfigError(f"{name}.{key}: unknown key for {cls.__name__}; allowed: {', '.join(allowed)}")
        coerce(f"{name}.{key}", value, hints[key])
