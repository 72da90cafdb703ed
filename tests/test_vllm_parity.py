"""A factory-built tiny model decodes the same tokens in transformers and in vLLM."""

from __future__ import annotations

import pytest

PROMPTS = ["What is 12 + 30?", "你好，世界", "the a of to and", "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.mark.slow
def test_greedy_tokens_match_between_transformers_and_vllm(tiny_model_dir, vllm_engine):
    import torch

    from align.models import load_model, load_tokenizer
    from rollouts.base import Sampling

    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    # The session's engine was started from tiny_model_dir; push its weights in case a test changed them.
    vllm_engine.load_weights(model.named_parameters())
    prompt_ids = [tokenizer(p).input_ids for p in PROMPTS]
    rollouts = vllm_engine.generate(prompt_ids, Sampling(temperature=0.0, max_new_tokens=24))
    for ids, rollout in zip(prompt_ids, rollouts, strict=True):
        expected = model.generate(
            torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )[0, len(ids) :]
        assert rollout.prompt_token_ids == ids
        assert rollout.token_ids == expected.tolist()
