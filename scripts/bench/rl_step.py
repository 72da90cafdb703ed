"""One RL iteration, ours against TRL's `GRPOTrainer`, on the same model, prompts and optimizer steps.

Ours: the `align ppo` loop with `advantage: grpo` and rollouts from the in-process vLLM engine, two
iterations; the second (the first warms up) is timed by the loop itself: generation + scoring
(rewards, reference and old log-probs) + training + weight sync, from `metrics.jsonl`.
TRL: `GRPOTrainer` (TRL 1.x) with a reference model (`beta` = our `kl_coef`) over the same two
batches of prompts. It generates with `transformers.generate`: TRL's vLLM path (colocate or
server) does not run on CPU, so this compares our whole stack, vLLM included, with TRL's as it
runs here. A callback stamps the end of every optimizer step; the timed iteration runs from the
last step of the first (warm-up) generation to the last step of the second, so it holds the
second generation, its scoring and its optimizer steps, and no trainer setup or teardown.
Both run in this process, ours first, on the same torch threads, with the same objective (GRPO
advantages, β·k3 KL in the loss), in bf16 autocast where the hardware has it (both), no gradient
checkpointing.

    .venv/bin/python scripts/bench/rl_step.py [--model runs/smollm2/base] [--rule rule_reward]
    .venv/bin/python scripts/bench/rl_step.py --smoke   # a tiny random model, tiny sizes (< 2 min)

The last line is `RESULT trl_ratio=<TRL s / our s> tokens_per_s=<our generated tokens / our s>
generation_share=<ours> training_share=<ours>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The repository's packages first (a script's own folder is sys.path[0]).
sys.path[0] = str(REPO)

PHASES = ("generation", "scoring", "training", "sync")
DEFAULTS = dict(
    model=REPO / "runs/smollm2/base",
    prompts_per_iteration=8,
    group_size=4,
    max_new_tokens=128,
    minibatch_size=16,
    micro_batch_size=8,
    ppo_epochs=2,
    num_threads=None,
)
SMOKE = dict(
    prompts_per_iteration=4,
    group_size=4,
    max_new_tokens=16,
    minibatch_size=8,
    micro_batch_size=4,
    ppo_epochs=2,
    num_threads=1,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="HF directory (default runs/smollm2/base)")
    parser.add_argument("--prompts", type=Path, default=REPO / "data/tasks/instructions/train.jsonl")
    parser.add_argument("--rule", default="constraint_reward", help="a reward rule in rewards.rules")
    parser.add_argument("--prompts_per_iteration", type=int, default=None)
    parser.add_argument("--group_size", type=int, default=None, help="completions per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--minibatch_size", type=int, default=None, help="sequences per optimizer step")
    parser.add_argument("--micro_batch_size", type=int, default=None, help="sequences per forward/backward")
    parser.add_argument("--ppo_epochs", type=int, default=None, help="passes over each iteration's rollouts")
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--kl_coef", type=float, default=0.02)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bf16"],
        help="ours and TRL's forward passes: bf16 autocast (auto: where the hardware has it) or float32",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny random model and sizes, for the tests")
    args = parser.parse_args()
    for key, value in {**DEFAULTS, **(SMOKE if args.smoke else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    rollouts = args.prompts_per_iteration * args.group_size
    if rollouts % args.minibatch_size or args.minibatch_size % args.micro_batch_size:
        parser.error(
            f"minibatch_size: must divide prompts_per_iteration x group_size ({rollouts}) and be a "
            f"multiple of micro_batch_size ({args.micro_batch_size}), so both sides take whole steps"
        )
    import rewards.rules

    if not callable(getattr(rewards.rules, args.rule, None)):
        parser.error(f"rule: {args.rule!r} is not a function in rewards.rules")
    return args


def build_smoke_model(out: Path, prompts: Path) -> Path:
    """A tiny random Llama with a 2k BPE tokenizer trained on the prompts' own text."""
    from align.models import build_model, train_tokenizer
    from align.ppo.prompts import prompt_messages, read_prompts

    texts = []
    for record in read_prompts(prompts):
        messages = prompt_messages(record)
        texts += [messages] if isinstance(messages, str) else [m["content"] for m in messages]
    tokenizer = train_tokenizer(texts, vocab_size=2048)
    model = build_model("tiny", tokenizer, seed=0, max_position_embeddings=512)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_ours(args: argparse.Namespace, out: Path) -> tuple[dict[str, float], float]:
    """The second iteration's phase times and the tokens it generated."""
    from align.ppo.config import PPOConfig
    from align.ppo.loop import METRICS, run_ppo

    config = PPOConfig(
        policy=args.model,
        output_dir=out,
        prompts=args.prompts,
        reward_rule=args.rule,
        advantage="grpo",
        kl_penalty="loss",  # β·k3 in the loss, as TRL's GRPO
        precision=args.precision,
        engine="vllm",
        iterations=2,
        prompts_per_iteration=args.prompts_per_iteration,
        samples_per_prompt=args.group_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        ppo_epochs=args.ppo_epochs,
        minibatch_size=args.minibatch_size,
        micro_batch_size=args.micro_batch_size,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        seed=args.seed,
        save_every=0,
        eval_prompts=None,
        report_to=["none"],
        num_threads=args.num_threads,
    )
    run_ppo(config)
    rows = [json.loads(line) for line in (out / METRICS).read_text(encoding="utf-8").splitlines()]
    timed = rows[1]
    tokens = timed["response_length"] * args.prompts_per_iteration * args.group_size
    return {phase: timed[f"time/{phase}"] for phase in PHASES}, tokens


def run_trl(args: argparse.Namespace, out: Path) -> float:
    """Seconds of TRL's second generation and its optimizer steps."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import rewards.rules
    from align.distributed import mixed_precision
    from align.models import load_model, load_tokenizer
    from align.ppo.prompts import prompt_batch, prompt_messages, read_prompts

    # The prompts of our iterations 1 and 2, in order and unshuffled, so each TRL generation sees
    # exactly the prompts of the matching iteration of ours.
    records = read_prompts(args.prompts)
    order = [
        i for it in (0, 1) for i in prompt_batch(it, args.prompts_per_iteration, len(records), args.seed)
    ]
    chats = []
    for i in order:
        messages = prompt_messages(records[i])
        chats.append([{"role": "user", "content": messages}] if isinstance(messages, str) else messages)
    dataset = Dataset.from_list([{"prompt": chat} for chat in chats])
    rule = getattr(rewards.rules, args.rule)

    def rule_reward(prompts, completions, **_) -> list[float]:
        # As our RewardSource does: rule(prompt messages, reply text), None counting 0.
        return [float(rule(p, c[0]["content"]) or 0.0) for p, c in zip(prompts, completions, strict=True)]

    rule_reward.__name__ = args.rule

    # Optimizer steps. Ours per iteration: ppo_epochs x rollouts / minibatch_size, each step
    # accumulating minibatch_size / micro_batch_size forward/backward passes of micro_batch_size.
    # TRL counts forward/backward passes of per_device_train_batch_size (`_step`), steps the
    # optimizer every gradient_accumulation_steps of them, generates generation_batch_size =
    # per_device_train_batch_size x steps_per_generation completions at a time and reuses them
    # num_iterations times (`_prepare_inputs`: it regenerates every steps_per_generation x
    # num_iterations passes). So, with one process:
    #   per_device_train_batch_size = micro_batch_size
    #   gradient_accumulation_steps = minibatch_size / micro_batch_size  (sequences per step match)
    #   steps_per_generation        = rollouts / micro_batch_size        (one generation = rollouts)
    #   num_iterations              = ppo_epochs
    # giving steps_per_generation x num_iterations / gradient_accumulation_steps
    #   = ppo_epochs x rollouts / minibatch_size optimizer steps per generation, as ours.
    rollouts = args.prompts_per_iteration * args.group_size
    steps = args.ppo_epochs * rollouts // args.minibatch_size
    config = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        bf16=mixed_precision(args.precision) == "bf16",  # as ours
        gradient_checkpointing=False,  # TRL's default; ours does not recompute activations
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=args.kl_coef,
        epsilon=0.2,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=1.0,
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.minibatch_size // args.micro_batch_size,
        steps_per_generation=rollouts // args.micro_batch_size,
        num_iterations=args.ppo_epochs,
        shuffle_dataset=False,
        max_steps=2 * steps,
    )

    class StepClock(TrainerCallback):
        """perf_counter at the start of training and at the end of every optimizer step."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_begin(self, *_, **__) -> None:
            self.stamps = [time.perf_counter()]

        def on_step_end(self, *_, **__) -> None:
            self.stamps.append(time.perf_counter())

    clock = StepClock()
    trainer = GRPOTrainer(
        model=load_model(args.model),
        reward_funcs=rule_reward,
        args=config,
        train_dataset=dataset,
        processing_class=load_tokenizer(args.model),
        callbacks=[clock],
    )
    trainer.train()
    if len(clock.stamps) != 2 * steps + 1:
        raise RuntimeError(f"TRL took {len(clock.stamps) - 1} optimizer steps, expected {2 * steps}")
    print(
        f"TRL: warm-up generation + {steps} steps {clock.stamps[steps] - clock.stamps[0]:.2f} s",
        flush=True,
    )
    return clock.stamps[2 * steps] - clock.stamps[steps]


def main() -> None:
    args = parse_args()
    threads = args.num_threads or int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    args.num_threads = threads
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Idle OpenMP threads sleep instead of spinning (see rollout_engines.py); both sides run under it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.smoke:
            args.model = build_smoke_model(root / "model", args.prompts)
        started = time.perf_counter()
        ours, tokens = run_ours(args, root / "ours")
        print(
            f"ours: {time.perf_counter() - started:.1f} s for both iterations, engine start included",
            flush=True,
        )
        trl_seconds = run_trl(args, root / "trl")

    import torch

    total = sum(ours.values())
    rollouts = args.prompts_per_iteration * args.group_size
    steps = args.ppo_epochs * rollouts // args.minibatch_size
    model = "a tiny random model (smoke)" if args.smoke else args.model
    print(
        f"\nOne iteration after a warm-up: {model}, {args.prompts_per_iteration} prompts x "
        f"{args.group_size} completions x <= {args.max_new_tokens} new tokens, {steps} optimizer steps "
        f"of {args.minibatch_size} sequences, rule {args.rule}, {torch.get_num_threads()} torch threads"
    )
    print(f"  TRL GRPOTrainer (transformers.generate)  {trl_seconds:8.2f} s")
    print(f"  ours (align ppo, grpo, in-process vLLM)  {total:8.2f} s   {tokens:.0f} tokens generated")
    for phase in PHASES:
        print(f"    {phase:<10} {ours[phase]:8.2f} s  {ours[phase] / total:6.1%}")
    print(
        f"RESULT trl_ratio={trl_seconds / total:.2f} tokens_per_s={tokens / total:.1f} "
        f"generation_share={ours['generation'] / total:.3f} training_share={ours['training'] / total:.3f}"
    )


if __name__ == "__main__":
    main()
