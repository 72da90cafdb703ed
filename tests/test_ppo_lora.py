"""A LoRA policy reaches the engine merged: HF parameter names, base weights plus B·A·α/r."""

from __future__ import annotations

from pathlib import Path

import torch

from align.models import load_model
from align.ppo.iteration import engine_weights


def test_lora_policy_streams_merged_weights_under_base_names(tiny_model_dir: Path):
    from peft import LoraConfig, get_peft_model

    base = dict(load_model(tiny_model_dir).named_parameters())
    policy = get_peft_model(
        load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    torch.manual_seed(0)
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_()
    streamed = {name: tensor.detach().clone() for name, tensor in engine_weights(policy)}
    merged = dict(policy.merge_and_unload().named_parameters())
    assert set(streamed) == set(base)
    for name, tensor in streamed.items():
        torch.testing.assert_close(tensor, merged[name])
    changed = [n for n in streamed if not torch.equal(streamed[n], base[n])]
    assert any("q_proj" in n for n in changed)
