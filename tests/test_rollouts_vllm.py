"""The in-process vLLM engine: sync parity with the trainer's model and log-prob parity."""

from __future__ import annotations

import pytest

from rollouts.base import RolloutEngine, Sampling

PROMPTS = ["What is 12 + 30?", "你好，世界", "the a of to and", "<|im_start|>user\nhi<|im_end|>\n", "3 + 4 ="]

# Engine vs trainer log-probs, float32 on CPU: measured max gap ~5e-6 (tiny preset), so 1e-4 leaves
# room for other kernels while still catching a stale weight, a wrong temperature or a stale cache.
LOGPROB_TOLERANCE = 1e-4


def trainer_logprobs(model, rollout, temperature: float) -> list[float]:
    """The trainer's recomputation: one forward pass over prompt + completion."""
    import torch

    ids = torch.tensor([rollout.prompt_token_ids + rollout.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(rollout.prompt_token_ids) - 1 : -1]
    logprobs = (logits / temperature).log_softmax(-1)
    return logprobs.gather(-1, torch.tensor(rollout.token_ids)[:, None])[:, 0].tolist()


@pytest.fixture
def policy(tiny_model_dir, vllm_engine):
    """A trainable copy of the tiny model; the shared engine gets the original weights back after."""
    from align.models import load_model

    model = load_model(tiny_model_dir)
    yield model
    vllm_engine.load_weights(load_model(tiny_model_dir).named_parameters())


def test_vllm_engine_speaks_the_rollout_protocol(vllm_engine):
    assert isinstance(vllm_engine, RolloutEngine)
    rollouts = vllm_engine.generate(PROMPTS[:2], Sampling(max_new_tokens=8, n=3, seed=0))
    assert [r.prompt_index for r in rollouts] == [0, 0, 0, 1, 1, 1]
    assert all(len(r.token_ids) == len(r.logprobs) <= 8 for r in rollouts)


def test_a_seeded_call_is_reproducible_and_leaves_the_trainers_rng_alone(vllm_engine):
    import torch

    sampling = Sampling(max_new_tokens=8, n=2, seed=3)
    torch.manual_seed(0)
    first = vllm_engine.generate(PROMPTS, sampling)
    trainer_draw = torch.rand(1)
    torch.manual_seed(0)
    again = vllm_engine.generate(PROMPTS, sampling)
    assert torch.rand(1) == trainer_draw
    other = vllm_engine.generate(PROMPTS, Sampling(max_new_tokens=8, n=2, seed=4))
    assert [r.token_ids for r in first] == [r.token_ids for r in again] != [r.token_ids for r in other]


@pytest.mark.slow
def test_greedy_completions_match_hf_after_an_optimizer_step(vllm_engine, policy, tiny_model_dir):
    import logging

    import torch

    from align.models import load_tokenizer
    from rollouts.hf_engine import HFEngine

    tokenizer = load_tokenizer(tiny_model_dir)
    greedy = Sampling(max_new_tokens=24, temperature=0)
    # Warm the prefix cache with the old weights: a stale cache would break parity below.
    before = vllm_engine.generate(PROMPTS, greedy)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-2)
    batch = tokenizer(["What is 12 + 30? 12 + 30 = 42."] * 4, return_tensors="pt")
    policy.train()
    policy(**batch, labels=batch.input_ids).loss.backward()
    optimizer.step()
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    reload_log.addHandler(handler)
    try:
        vllm_engine.load_weights(policy.named_parameters())
    finally:
        reload_log.removeHandler(handler)
    # The tied LM head and the rotary cache have no tensors of their own: no "Failed to load" noise.
    assert warnings == []

    after = vllm_engine.generate(PROMPTS, greedy)
    expected = HFEngine(policy, tokenizer).generate(PROMPTS, greedy)
    assert [r.token_ids for r in after] == [r.token_ids for r in expected]
    assert [r.token_ids for r in after] != [r.token_ids for r in before]  # the step changed something


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_match_the_trainers_recomputation(vllm_engine, tiny_model_dir, temperature):
    from align.models import load_model

    model = load_model(tiny_model_dir).eval()
    rollouts = vllm_engine.generate(
        PROMPTS, Sampling(max_new_tokens=32, temperature=temperature, n=4, seed=1)
    )
    gaps = [
        abs(engine - trainer)
        for r in rollouts
        for engine, trainer in zip(r.logprobs, trainer_logprobs(model, r, temperature), strict=True)
    ]
    print(
        f"T={temperature}: {len(gaps)} tokens, max gap {max(gaps):.2e}, mean gap {sum(gaps) / len(gaps):.2e}"
    )
    assert max(gaps) < LOGPROB_TOLERANCE
