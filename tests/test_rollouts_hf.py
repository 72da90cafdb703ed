"""The `transformers.generate` reference engine and the engine factory."""

from __future__ import annotations

import pytest

from rollouts.base import RolloutEngine, Sampling
from rollouts.factory import EngineConfig, build_engine


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    return build_engine(EngineConfig(kind="hf"), tiny_model_dir)


def test_factory_builds_the_reference_engine(hf_engine):
    assert isinstance(hf_engine, RolloutEngine)


def test_factory_rejects_an_unknown_engine_naming_the_key():
    with pytest.raises(ValueError, match="kind"):
        EngineConfig(kind="tgi")


def test_hf_logprobs_are_the_tempered_distribution_of_the_model(hf_engine):
    import torch

    rollouts = hf_engine.generate(
        ["What is 1 + 2?", "你好"], Sampling(max_new_tokens=12, temperature=0.7, n=2, seed=0)
    )
    assert [r.prompt_index for r in rollouts] == [0, 0, 1, 1]
    for r in rollouts:
        ids = torch.tensor([r.prompt_token_ids + r.token_ids])
        with torch.no_grad():
            logits = hf_engine.model(ids).logits[0, len(r.prompt_token_ids) - 1 : -1] / 0.7
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
        assert r.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_hf_completion_ends_at_a_stop_token(hf_engine):
    (free,) = hf_engine.generate(["the a of"], Sampling(max_new_tokens=10, temperature=0))
    stop = free.token_ids[3]
    (stopped,) = hf_engine.generate(
        ["the a of"], Sampling(max_new_tokens=10, temperature=0, stop_token_ids=(stop,))
    )
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(stop) + 1]
    assert stopped.finish_reason == "stop" and free.finish_reason == "length"
