"""A factory-built tiny model decodes the same tokens in transformers and in vLLM."""

from __future__ import annotations

import pytest

PROMPTS = ["What is 12 + 30?", "你好，世界", "the a of to and", "<|im_start|>user\nhi<|im_end|>\n"]


@pytest.mark.slow
def test_greedy_tokens_match_between_transformers_and_vllm(tiny_model_dir):
    from vllm import LLM, SamplingParams

    from align.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    llm = LLM(model=str(tiny_model_dir), dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    try:
        outputs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    finally:
        del llm
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)[
            0, ids.shape[1] :
        ]
        assert output.prompt_token_ids == ids[0].tolist()
        assert list(output.outputs[0].token_ids) == expected.tolist()
