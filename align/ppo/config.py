"""The `align ppo` config: one typed dataclass, validated where it enters (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError
from align.outputs import check_output_path
from align.ppo.advantages import ESTIMATORS

LossAggregationName = Literal[
    "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
]
"""verl's names (`core_algos.agg_loss`): TRL's `loss_type` `dapo`/`bnpo` is token-mean, `grpo`
seq-mean-token-mean, `dr_grpo` seq-mean-token-sum-norm (`align.ppo.losses.LossAggregation`)."""
LOSS_AGGREGATIONS = get_args(LossAggregationName)
RolloutCorrection = Literal["none", "token_tis", "sequence_tis", "token_mask", "sequence_mask"]
"""`align.ppo.losses.rollout_ratios`."""
ROLLOUT_CORRECTIONS = get_args(RolloutCorrection)


@dataclass
class PPOConfig:
    """PPO (or a critic-free variant) from an SFT checkpoint against a reward model or a rule reward."""

    policy: Path
    """The SFT checkpoint (HF directory): the starting policy and, unless `reference` is set, the frozen reference."""
    output_dir: Path
    """Where checkpoints, metrics.jsonl, curves.png, TensorBoard logs and the final `policy/` go."""
    prompts: Path
    """JSONL of prompts: one object per line with `prompt` (text, wrapped in the chat template) or
    `messages` (a chat); any other fields (e.g. `answer`) are handed to the rule reward."""
    eval_prompts: Path | None = None
    """Held-out prompts (same format): at the end, fresh samples of the reference and of the final
    policy (`eval_samples_per_prompt` per prompt, at `temperature`) get the RM's mean score and
    rule-judged correctness, written to `quality.json`."""
    eval_every: int = 0
    """Every this many iterations (0: only at the end), the same fresh-sample evaluation of the current
    policy: `eval/correct`, `eval/correct/<kind>` and `eval/reward_mean` in metrics.jsonl and the
    trackers, and a held-out panel in curves.png. An RM score that climbs while correctness falls is
    the policy overoptimizing the reward model. Needs `eval_prompts`."""
    eval_limit: int = 200
    """How many of `eval_prompts` to sample."""
    eval_samples_per_prompt: int = 8
    """Fresh samples per held-out prompt. 2 per prompt over 200 prompts (400 samples) leave a standard
    error of ~0.023 on a correctness near 0.7, the size of the effects to be measured; 8 halve it."""
    reward_model: Path | None = None
    """The reward model directory (from `align rm`); its score of prompt + response is the reward."""
    reward_rule: Literal["rule_reward", "is_correct", "constraint_reward"] | None = None
    """Instead of (or, with `reward_model`, added to) the RM: a rule from `rewards.rules` (`rule_reward`:
    helpful/harmless/honest in [0, 1]; `is_correct`: 1 for a correct answer or all constraints
    followed; `constraint_reward`: the share of an instruction's constraints followed)."""
    reward_rule_weight: float = 1.0
    """Weight of `reward_rule` in the reward: RM score + weight x rule score."""
    reference: Path | None = None
    """The frozen reference for the KL penalty (default: `policy`)."""
    critic_init: Literal["reward_model", "policy"] = "reward_model"
    """Initialise the critic from the reward model (its value head too) or from the policy (new head)."""
    advantage: str = "gae"
    """Advantage estimator, one of `align.ppo.advantages.ESTIMATORS`: `gae` (PPO with a critic), or
    critic-free `grpo`, `rloo`, `reinforce_pp`. It sets the defaults of `kl_penalty`,
    `whiten_advantages` and `loss_aggregation`: `grpo` is GRPO as DeepSeek defined it (β·k3 in the
    loss, no batch whitening, seq-mean-token-mean); the others fold β·k1 into the rewards, whiten,
    and take the token mean."""
    engine: Literal["vllm", "hf", "server"] = "vllm"
    """Rollout engine: in-process vLLM, `transformers.generate` (reference), or a `vllm serve` endpoint."""
    server_url: str | None = None
    """Base URL of the `vllm serve` endpoint when `engine` is `server` (e.g. http://127.0.0.1:8000).
    Its API key, if it has one, is read from OPENAI_API_KEY."""
    server_model: str = "policy"
    """The model name the server answers to (`align serve --served_model_name`)."""
    iterations: int = 20
    """PPO iterations (generate, score, update, sync)."""
    prompts_per_iteration: int = 16
    """Prompts per iteration, over all processes."""
    samples_per_prompt: int = 4
    """Completions per prompt (a GRPO/RLOO group; at least 2 for those). 4 on the real base: with
    fewer, most groups of a 0/1 reward are all equal and carry no gradient."""
    max_new_tokens: int = 32
    """Longest completion."""
    max_prompt_tokens: int = 256
    """Prompts are truncated on the left to this many tokens."""
    temperature: float = 1.0
    """Sampling temperature; the trainer's log-probs use logits / temperature as the engine does."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 disables)."""
    ppo_epochs: int = 2
    """Passes over each iteration's experience."""
    minibatch_size: int = 8
    """Sequences per optimizer step (per process)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward; gradients accumulate over minibatch_size / micro_batch_size."""
    learning_rate: float = 1e-5
    """Policy learning rate (AdamW)."""
    critic_learning_rate: float = 5e-5
    """Critic learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay for both models."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    clip_range: float = 0.2
    """PPO ratio clip ε (both sides unless `clip_range_low` / `clip_range_high` say otherwise)."""
    clip_range_low: float | None = None
    """ε_low: the ratio of a token with a negative advantage is clipped at 1 - ε_low (null: `clip_range`)."""
    clip_range_high: float | None = None
    """ε_high: the ratio of a token with a positive advantage is clipped at 1 + ε_high (null:
    `clip_range`). DAPO's clip-higher sets it above ε_low (0.28 vs 0.2) so that unlikely tokens can
    still gain probability, which keeps the policy's entropy from collapsing."""
    loss_aggregation: LossAggregationName | None = None
    """How per-token losses become the loss, over the GLOBAL minibatch (every micro-batch and process,
    so the gradient does not depend on micro_batch_size or the process count): `token-mean` (every
    token weighs the same; DAPO), `seq-mean-token-mean` (each sequence's token mean, then the mean over
    sequences: GRPO's original; short sequences weigh more per token), `seq-mean-token-sum`, or
    `seq-mean-token-sum-norm` (token sums over sequences x max_new_tokens: Dr. GRPO's constant
    normaliser, no length bias). null: the estimator's (`grpo`: seq-mean-token-mean; else token-mean).
    The value loss is always the token mean."""
    rollout_correction: RolloutCorrection = "none"
    """Correction for sampling with the engine while the trainer computes the policy:
    w = π_trainer_old/π_engine of the sampled tokens weighs the policy loss. `token_tis`: min(w, cap)
    per token (truncated importance sampling); `sequence_tis`: min(w of the whole response, cap) on
    its tokens; `token_mask` / `sequence_mask`: w inside [floor, cap], 0 outside (IcePop). The raw
    ratios' mean/min/max and the share truncated or dropped are logged under `rollout_correction/`
    (the ratios are logged with `none` too). Matters on GPUs with a bf16 engine; here the engines
    match the trainer to ~1e-6."""
    rollout_correction_cap: float = 2.0
    """Upper bound C of the rollout correction: TIS weights are truncated at C, the mask modes drop
    ratios above it (TRL's `vllm_importance_sampling_clip_max` is 3, TIS's paper uses 2)."""
    rollout_correction_floor: float = 0.5
    """Lower bound of the mask modes: ratios below it are dropped (TIS truncates from above only)."""
    value_clip_range: float = 0.2
    """Clip of the new values around the old ones in the value loss."""
    value_coef: float = 0.5
    """Weight of the value loss (the critic has its own optimizer; this scales its gradients)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (0 disables)."""
    kl_coef: float = 0.02
    """β of the per-token KL penalty to the reference (see `kl_penalty`). 0.02 let SmolLM2-135M move
    ~5-10 nats from its start in 40 iterations while the reward rose (2026-11-30)."""
    kl_penalty: Literal["reward", "loss"] | None = None
    """Where the KL to the reference enters: `reward`, folded into the per-token rewards as β·k1
    (InstructGPT's PPO); `loss`, a β·k3 term of the policy loss (GRPO as DeepSeek defined it). null:
    the estimator's (`grpo`: loss; `grpo` with the KL folded into the rewards, this suite's `grpo`
    before v0.2, is `kl_penalty: reward`; the others: reward). With `loss`, one epoch and one
    optimizer step per iteration, the update's first pass is on-policy and gives the old log-probs:
    no separate scoring pass of the policy."""
    kl_target: float | None = None
    """Adaptive β: per-sequence KL to steer toward, β *= 1 + clip(KL/target - 1, ±0.2) after each
    iteration (Ziegler et al. 2019); null keeps β fixed below `kl_bound`."""
    kl_bound: float = 10.0
    """Hard bound on the mean per-sequence KL to the reference: an iteration above it doubles β. A
    bound of 2 nats doubled β as soon as a real base learned anything and took the reward away."""
    gamma: float = 1.0
    """Discount γ."""
    lam: float = 0.95
    """GAE λ."""
    whiten_advantages: bool | None = None
    """Normalise advantages to zero mean and unit variance over the iteration's tokens. null: the
    estimator's (`grpo`: false, its advantages are normalised within each group; the others: true)."""
    whiten_rewards: bool = False
    """Normalise sequence scores over the iteration before adding the KL penalty."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: groups whose samples all got the same score (no gradient from a group
    estimator) are dropped and more prompts drawn until the iteration has `prompts_per_iteration`
    groups again. The dropped share is logged (`dynamic_sampling/dropped_share`). Needs a group
    estimator (`grpo`, `rloo`)."""
    dynamic_sampling_max_draws: int = 3
    """Extra generation rounds per iteration (each of `prompts_per_iteration` new prompts) to refill the
    batch; when they run out, the batch is completed with dropped groups (logged as
    `dynamic_sampling/filled_share`) so every process trains on as many sequences as the others."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: a response longer than max_new_tokens - overlong_buffer tokens
    loses `overlong_penalty_factor` x (its excess / overlong_buffer), up to the factor at
    max_new_tokens; logged as `reward/overlong_penalty`. 0 disables."""
    overlong_penalty_factor: float = 1.0
    """The overlong penalty at max_new_tokens."""
    lora_r: int = 0
    """LoRA rank for the policy (0 = full fine-tuning); merged into the weights for the engine sync."""
    lora_alpha: int = 16
    """LoRA α."""
    seed: int = 0
    """Seed for the prompt order, sampling and initialisation."""
    sample_log_every: int = 10
    """Every N iterations (0 disables) a table of `sample_log_count` samples of the iteration (prompt,
    response, reward parts, advantage, KL) goes to samples.jsonl in output_dir and to the trackers
    (TensorBoard's text panel): reading what the policy writes is how reward hacking is seen first."""
    sample_log_count: int = 8
    """Samples per logged table (the main process's first rollouts)."""
    save_every: int = 10
    """Checkpoint every N iterations (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept."""
    resume: bool = True
    """Continue from the latest checkpoint in output_dir when there is one."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Trackers (Accelerate `log_with`): tensorboard, wandb, ... or `none`."""
    num_threads: int | None = None
    """Torch threads for trainer and engine (null: all cores). On a machine shared with other jobs
    use 1: OpenMP threads spinning on busy cores slow a small model down by an order of magnitude."""
    precision: Literal["auto", "float32", "bf16"] = "auto"
    """Forward passes of the trainer (policy, reference, critic, RM) in bf16 autocast, weights and
    optimizer in float32. `auto`: bf16 where the hardware multiplies
    bf16 natively (CUDA, or a CPU with AVX512-BF16/AMX: an RL iteration of SmolLM2-135M 2.06x float32
    on this 2-core machine, scripts/bench/rl_step.py), else float32."""
    vllm_kvcache_gib: int = 1
    """KV-cache size of the in-process vLLM engine (GiB, CPU)."""

    def __post_init__(self) -> None:
        check_output_path(
            "output_dir",
            self.output_dir,
            [self.policy, self.prompts, self.reward_model, self.reference, self.eval_prompts],
        )
        check_exists("policy", self.policy)
        check_exists("prompts", self.prompts)
        check_exists("reward_model", self.reward_model)
        check_exists("reference", self.reference)
        check_exists("eval_prompts", self.eval_prompts)
        if self.reward_model is None and self.reward_rule is None:
            raise ConfigError("reward_model: give a reward model directory or a reward_rule (or both)")
        if self.advantage not in ESTIMATORS:
            raise ConfigError(f"advantage: expected one of {', '.join(ESTIMATORS)}, got {self.advantage!r}")
        estimator = ESTIMATORS[self.advantage]
        if estimator.needs_critic and self.critic_init == "reward_model" and self.reward_model is None:
            raise ConfigError("critic_init: `reward_model` needs reward_model; use critic_init: policy")
        if self.engine == "server" and not self.server_url:
            raise ConfigError("server_url: required when engine is `server`")
        if estimator.needs_groups and self.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt: {self.advantage} needs groups of at least 2")
        # Fields left null take the estimator's defaults: `advantage: grpo` alone is DeepSeek's GRPO.
        if self.kl_penalty is None:
            self.kl_penalty = estimator.kl_penalty
        if self.whiten_advantages is None:
            self.whiten_advantages = estimator.whiten_advantages
        if self.loss_aggregation is None:
            self.loss_aggregation = estimator.loss_aggregation
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            raise ConfigError(
                f"loss_aggregation: expected one of {', '.join(LOSS_AGGREGATIONS)}, got {self.loss_aggregation!r}"
            )
        if self.rollout_correction not in ROLLOUT_CORRECTIONS:
            raise ConfigError(
                f"rollout_correction: expected one of {', '.join(ROLLOUT_CORRECTIONS)}, "
                f"got {self.rollout_correction!r}"
            )
        if self.dynamic_sampling and not estimator.needs_groups:
            raise ConfigError(
                f"dynamic_sampling: needs a group estimator (grpo, rloo); {self.advantage} does not "
                "compare the samples of a prompt"
            )
        for key in (
            "iterations",
            "prompts_per_iteration",
            "samples_per_prompt",
            "max_new_tokens",
            "max_prompt_tokens",
            "ppo_epochs",
            "minibatch_size",
            "micro_batch_size",
            "learning_rate",
            "critic_learning_rate",
            "kl_bound",
            "vllm_kvcache_gib",
            "eval_limit",
            "eval_samples_per_prompt",
            "dynamic_sampling_max_draws",
            "sample_log_count",
        ):
            check_positive(key, getattr(self, key))
        if self.kl_target is not None:
            check_range("kl_target", self.kl_target, 1e-6, self.kl_bound)
        if self.minibatch_size % self.micro_batch_size:
            raise ConfigError("micro_batch_size: must divide minibatch_size")
        check_range("temperature", self.temperature, 1e-3, 10.0)
        check_range("top_p", self.top_p, 1e-3, 1.0)
        check_range("clip_range", self.clip_range, 0.0, 1.0)
        if self.clip_range_low is not None:
            check_range("clip_range_low", self.clip_range_low, 0.0, 1.0)
        if self.clip_range_high is not None:
            check_range("clip_range_high", self.clip_range_high, 0.0, 10.0)
        # The band must hold ρ = 1 (engine and trainer agree) strictly inside, or the correction
        # would truncate or drop the tokens it has nothing to correct.
        if not self.rollout_correction_cap > 1.0:
            raise ConfigError(f"rollout_correction_cap: must be > 1, got {self.rollout_correction_cap!r}")
        if not 0.0 <= self.rollout_correction_floor < 1.0:
            raise ConfigError(
                f"rollout_correction_floor: must be in [0, 1), got {self.rollout_correction_floor!r}"
            )
        check_range("overlong_buffer", self.overlong_buffer, 0, self.max_new_tokens)
        check_range("overlong_penalty_factor", self.overlong_penalty_factor, 0.0, None)
        check_range("sample_log_every", self.sample_log_every, 0, None)
        check_range("value_clip_range", self.value_clip_range, 0.0, None)
        check_range("kl_coef", self.kl_coef, 0.0, None)
        check_range("reward_rule_weight", self.reward_rule_weight, 0.0, None)
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("lam", self.lam, 0.0, 1.0)
        check_range("lora_r", self.lora_r, 0, None)
        check_range("save_every", self.save_every, 0, None)
        check_range("eval_every", self.eval_every, 0, None)
        if self.eval_every and self.eval_prompts is None:
            raise ConfigError("eval_every: needs eval_prompts (the held-out prompts to sample)")
        check_range("keep_checkpoints", self.keep_checkpoints, 1, None)
