"""The client engine generates through `align serve` with token ids and engine log-probs."""

from __future__ import annotations

import pytest

from rollouts.base import RolloutEngine, Sampling

pytestmark = pytest.mark.slow

PROMPTS = ["What is 12 + 30?", "the a of to and"]


@pytest.fixture(scope="module")
def client_engine(vllm_server):
    from rollouts.client_engine import ClientEngine

    engine = ClientEngine(
        f"http://127.0.0.1:{vllm_server.port}", vllm_server.served_model_name, vllm_server.api_key
    )
    yield engine
    engine.close()


def test_client_engine_matches_the_in_process_engine_greedily(client_engine, vllm_engine):
    assert isinstance(client_engine, RolloutEngine)
    greedy = Sampling(max_new_tokens=16, temperature=0)
    remote, local = client_engine.generate(PROMPTS, greedy), vllm_engine.generate(PROMPTS, greedy)
    assert [r.prompt_token_ids for r in remote] == [r.prompt_token_ids for r in local]
    assert [r.token_ids for r in remote] == [r.token_ids for r in local]
    for theirs, ours in zip(remote, local, strict=True):
        assert theirs.logprobs == pytest.approx(ours.logprobs, abs=1e-4)


def test_client_engine_groups_n_samples_by_prompt(client_engine, tiny_model_dir):
    from align.models import load_tokenizer

    token_prompt = load_tokenizer(tiny_model_dir)("3 + 4 =").input_ids
    rollouts = client_engine.generate([PROMPTS[0], token_prompt], Sampling(max_new_tokens=8, n=3, seed=0))
    assert [r.prompt_index for r in rollouts] == [0, 0, 0, 1, 1, 1]
    assert rollouts[3].prompt_token_ids == token_prompt
    assert all(len(r.token_ids) == len(r.logprobs) for r in rollouts)


def test_client_engine_pushes_weights_through_the_weight_transfer_api(client_engine, tiny_model_dir):
    import torch

    from align.models import load_model, load_tokenizer
    from rollouts.hf_engine import HFEngine

    policy, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    greedy = Sampling(max_new_tokens=16, temperature=0)
    before = client_engine.generate(PROMPTS, greedy)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-2)
    batch = tokenizer(["What is 12 + 30? 12 + 30 = 42."] * 4, return_tensors="pt")
    policy(**batch, labels=batch.input_ids).loss.backward()
    optimizer.step()
    try:
        client_engine.load_weights(policy.named_parameters())
        after = client_engine.generate(PROMPTS, greedy)
        expected = HFEngine(policy, tokenizer).generate(PROMPTS, greedy)
        assert [r.token_ids for r in after] == [r.token_ids for r in expected]
        assert [r.token_ids for r in after] != [r.token_ids for r in before]
    finally:
        client_engine.load_weights(load_model(tiny_model_dir).named_parameters())
    assert [r.token_ids for r in client_engine.generate(PROMPTS, greedy)] == [r.token_ids for r in before]


def test_a_lora_policy_reaches_the_server_merged(client_engine, tiny_model_dir):
    """The pushed weights are copies of the merged ones: the stream unmerges the adapter in place
    when it ends, after the client has collected every tensor (a view would send the base)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from align.models import load_model, load_tokenizer
    from align.ppo.iteration import engine_weights
    from rollouts.hf_engine import HFEngine

    torch.manual_seed(0)
    policy = get_peft_model(
        load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained adapter: the merged model differs from the base
    greedy = Sampling(max_new_tokens=16, temperature=0)
    before = client_engine.generate(PROMPTS, greedy)
    try:
        client_engine.load_weights(engine_weights(policy))
        served = client_engine.generate(PROMPTS, greedy)
        merged = HFEngine(policy.merge_and_unload(), load_tokenizer(tiny_model_dir)).generate(PROMPTS, greedy)
        assert [r.token_ids for r in served] == [r.token_ids for r in merged]
        assert [r.token_ids for r in served] != [r.token_ids for r in before]
    finally:
        client_engine.load_weights(load_model(tiny_model_dir).named_parameters())
