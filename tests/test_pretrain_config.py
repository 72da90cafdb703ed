"""The pretrain recipe is checked at the door: errors name the key and what is allowed."""

import pytest

from align.config import load_config
from align.errors import ConfigError
from align.pretrain.config import PretrainConfig


def recipe(corpus, tokenizer, **phase):
    return {
        "model": "tiny",
        "tokenizer": str(tokenizer),
        "output_dir": "unused",
        "sources": [{"name": "en", "path": str(corpus)}],
        "phases": [{"mixture": {"en": 1.0}, "max_steps": 3, **phase}],
    }


def test_a_mixture_naming_an_unknown_source_is_rejected_with_the_allowed_names(
    pretrain_corpus, tiny_model_dir
):
    values = recipe(pretrain_corpus, tiny_model_dir, mixture={"web": 1.0})
    with pytest.raises(ConfigError, match=r"phases\[0\]\.mixture\.web: unknown source; allowed: en"):
        load_config(PretrainConfig, overrides=values)


def test_a_phase_needs_exactly_one_budget_and_a_token_budget_sets_its_steps(pretrain_corpus, tiny_model_dir):
    with pytest.raises(
        ConfigError, match=r"phases\[0\]\.max_steps: give exactly one of max_steps and max_tokens"
    ):
        load_config(PretrainConfig, overrides=recipe(pretrain_corpus, tiny_model_dir, max_tokens=1000))
    values = recipe(
        pretrain_corpus, tiny_model_dir, max_steps=None, max_tokens=1000, batch_size=2, seq_len=64
    )
    assert load_config(PretrainConfig, overrides=values).phases[0].steps() == 8  # ceil(1000 / 128)


def test_an_unknown_preset_names_the_allowed_ones(pretrain_corpus, tiny_model_dir):
    values = {**recipe(pretrain_corpus, tiny_model_dir), "model": "huge"}
    with pytest.raises(ConfigError, match="model: 'huge' is neither a model directory nor a preset"):
        load_config(PretrainConfig, overrides=values)
