"""Every shipped accelerate config is parsed and dry-run through Accelerate's own launcher code."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.launch_plan import dry_run_launch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "scripts/accelerate").glob("*.yaml"))
EXPECTED = {
    "cpu_1proc.yaml": ("simple", 1),
    "cpu_2proc.yaml": ("multi_gpu", 2),
    "ddp_gpu.yaml": ("multi_gpu", 8),
    "fsdp2.yaml": ("multi_gpu", 8),
    "zero3.yaml": ("deepspeed", 8),
}


def test_every_shipped_config_is_covered():
    assert {c.name for c in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_dry_runs(config, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    line = (
        f"accelerate launch --config_file {config} -m align.cli import-base "
        f"--gguf_file {gguf} --output_dir {tmp_path / 'out'}"
    )
    plan = dry_run_launch(line)
    assert (plan.launcher, plan.num_processes) == EXPECTED[config.name]
    assert plan.config.gguf_file == gguf
    if config.name == "fsdp2.yaml":
        assert plan.env["FSDP_VERSION"] == "2"
        assert plan.env["ACCELERATE_USE_FSDP"] == "true"
    if config.name == "zero3.yaml":
        assert plan.env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"


def test_dry_run_rejects_a_bad_recipe(tmp_path):
    from align.errors import ConfigError

    line = f"accelerate launch --config_file {CONFIGS[0]} -m align.cli import-base --gguf_file {tmp_path}/no.gguf --output_dir o"
    with pytest.raises(ConfigError, match="gguf_file"):
        dry_run_launch(line)
