"""`align tokenizer`: the byte-level BPE vocabulary trained on the cleaned shards."""

from __future__ import annotations

import pytest

from align.corpus.config import TokenizerConfig
from align.corpus.tokenizer import run_tokenizer
from align.models import load_tokenizer


@pytest.mark.slow
def test_tokenizer_trains_on_the_cleaned_corpus_with_the_configured_vocabulary(planted_output, tmp_path):
    out = run_tokenizer(TokenizerConfig(inputs=[planted_output], output_dir=tmp_path / "tok", vocab_size=600))
    tokenizer = load_tokenizer(out)
    assert len(tokenizer) == 600
    text = "床前明月光 — The fox. Лиса."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.eos_token == "<|im_end|>"
