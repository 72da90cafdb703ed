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


def test_client_engine_says_clearly_that_a_cpu_server_takes_no_weights(client_engine, tiny_model_dir):
    from rollouts.client_engine import WeightUpdateUnsupported

    with pytest.raises(WeightUpdateUnsupported, match="weight-transfer API"):
        client_engine.load_weights([])
