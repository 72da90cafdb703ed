"""The `align` command: help for every stage, and one-line errors (exit 2) for bad configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import COMMANDS

ALIGN = str(Path(sys.executable).with_name("align"))
STAGES = ["corpus", "tokenizer", "pretrain", "sft", "rm", "ppo", "serve", "label", "eval", "pipeline"]


def align(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ALIGN, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_every_stage():
    result = align("--help")
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert set(STAGES) <= listed


@pytest.mark.parametrize(
    "path", [[c.name, *([k.name] if k else [])] for c in COMMANDS for k in (None, *c.children)]
)
def test_every_command_explains_its_options(path):
    command = next(c for c in COMMANDS if c.name == path[0])
    if len(path) == 1 and not command.config:
        pytest.skip("a group: its subcommands are checked")
    result = align(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    assert "[a" in result.stdout or "[one of" in result.stdout or "[true/false" in result.stdout


def test_field_docstrings_appear_in_help():
    result = align("import-base", "--help")
    assert "The .gguf file" in result.stdout
    assert "required" in result.stdout


def test_unknown_key_in_recipe_is_one_line_exit_2(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"gguf_file: {gguf}\noutput_dir: {tmp_path / 'out'}\nlearning_rat: 1e-4\n")
    result = align("import-base", "--config", str(recipe))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "learning_rat: unknown key" in result.stderr and "allowed: dtype, gguf_file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_type_names_the_key_and_the_type(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    result = align(
        "import-base", "--gguf_file", str(gguf), "--output_dir", str(tmp_path / "o"), "--overwrite", "maybe"
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith("overwrite: expected true/false, got 'maybe'")


def test_literal_choice_lists_the_allowed_values(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    result = align("import-base", "--gguf_file", str(gguf), "--output_dir", "o", "--dtype", "float8")
    assert result.returncode == 2
    assert "dtype: expected one of 'float32', 'bfloat16', got 'float8'" in result.stderr


def test_missing_file_names_the_key(tmp_path):
    result = align(
        "import-base", "--gguf_file", str(tmp_path / "nope.gguf"), "--output_dir", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert "gguf_file: file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_missing_recipe_file_is_one_line(tmp_path):
    result = align("import-base", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config: file not found" in result.stderr and result.stderr.count("\n") == 1


def test_missing_required_key_is_named(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {tmp_path}\n")
    result = align("import-base", "--config", str(recipe))
    assert result.returncode == 2
    assert "gguf_file: required" in result.stderr


def test_unknown_option_is_refused():
    result = align("import-base", "--no_such_option", "1")
    assert result.returncode == 2
    assert "--no_such_option: unknown option" in result.stderr


def test_unknown_command_is_refused():
    result = align("fly")
    assert result.returncode == 2
    assert "fly: unknown command" in result.stderr


def test_check_config_prints_the_resolved_config_and_runs_nothing(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"run_dir: /elsewhere\npipeline: {{stages: []}}\nimport-base:\n  gguf_file: {gguf}\n  output_dir: ${{run_dir}}/base\n"
    )
    result = align(
        "import-base", "--config", str(recipe), "--run_dir", str(tmp_path / "run"), "--check_config"
    )
    assert result.returncode == 0, result.stderr
    assert f"output_dir: {tmp_path / 'run'}/base" in result.stdout
    assert not (tmp_path / "run").exists()


def test_section_picks_a_named_run_of_a_command(tmp_path):
    from align.cli import stage_parts
    from align.pipeline import stage_command

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"run_dir: {tmp_path}\npipeline: {{stages: [import-base, import-base@second]}}\n"
        f"import-base: {{gguf_file: {gguf}, output_dir: first}}\n"
        f"import-base@second: {{gguf_file: {gguf}, output_dir: second}}\n"
    )
    result = align(
        "import-base", "--config", str(recipe), "--section", "import-base@second", "--check_config"
    )
    assert result.returncode == 0, result.stderr
    assert "output_dir: second" in result.stdout
    assert stage_parts("ppo@rlhf") == (["ppo"], "ppo@rlhf")
    assert stage_parts("label export") == (["label", "export"], "label-export")
    assert stage_command("ppo@rlhf", recipe, None)[-4:] == ["--config", str(recipe), "--section", "ppo@rlhf"]
