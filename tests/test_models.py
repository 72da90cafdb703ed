"""The model factory: tokenizer, chat template, presets, and loading in transformers and vLLM."""

from __future__ import annotations

import pytest

from align.models import CHAT_TEMPLATE, EOS_TOKEN, PRESETS, build_model, load_model, load_tokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "2 加 3 等于多少？"},
    {"role": "assistant", "content": "2 加 3 等于 5。"},
]


def test_tokenizer_round_trips_english_and_chinese(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    for text in ["What is 12 + 30? 12 + 30 = 42.", "你好，世界。", "emoji 🙂 and tabs\t"]:
        assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_tokenizer_has_special_tokens_and_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert len(tokenizer) == 2048


def test_assistant_mask_covers_exactly_the_assistant_turns(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    encoded = tokenizer.apply_chat_template(
        CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assistant = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert assistant == "2 + 3 = 5.<|im_end|>2 加 3 等于 5。<|im_end|>"


def test_generation_prompt_opens_an_assistant_turn(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    text = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("preset", ["tiny", "m30"])
def test_presets_have_the_documented_size(preset):
    from align.models import count_parameters, train_tokenizer

    tokenizer = train_tokenizer(["abc def"] * 10, vocab_size=300)
    params = count_parameters(build_model(preset, tokenizer)) - 300 * PRESETS[preset]["hidden_size"]
    expected = {"tiny": 0.78e6, "m30": 23.6e6}[preset]  # without the embedding
    assert abs(params - expected) / expected < 0.05


def test_saved_model_loads_back_with_identical_logits(tiny_model_dir):
    import torch

    model = load_model(tiny_model_dir)
    again = load_model(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    from align.errors import InputError

    with pytest.raises(InputError, match="not a directory"):
        load_model(tmp_path / "nope")
