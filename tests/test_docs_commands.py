"""Every command in the README and the scaling guide is exercised: run, or dry-run where it needs
GPUs or a cluster (Accelerate's own launcher code prepares it and the config is validated)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import parse_command_line
from align.launch_plan import dry_run_launch
from align.pipeline import PipelineConfig, planned_stages

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "docs/scaling.md"]


def documented_commands() -> list[tuple[str, str]]:
    """(document, command) for every line of every ```bash block."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    found.append((doc.name, line))
    return found


COMMANDS = documented_commands()
ALIGN_RUNS = [c for _, c in COMMANDS if c.startswith("align ") and "--help" not in c]


def on_tiny_run(line: str, run_dir: Path) -> str:
    """Point a documented command at the session's tiny run directory."""
    line = line.replace("runs/demo", str(run_dir)).replace("runs/tiny", str(run_dir))
    if "--config scripts/recipes/" in line and "--run_dir" not in line:
        line += f" --run_dir {run_dir}"  # the recipe's own run_dir, moved to the session's run
    return line


def test_the_docs_have_commands():
    assert {doc for doc, _ in COMMANDS} == {"README.md", "scaling.md"}
    assert any(c.startswith("accelerate launch") for _, c in COMMANDS)


@pytest.mark.parametrize("line", [c for _, c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(line):
    result = subprocess.run(["make", "-n", *line.split()[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("line", [c for _, c in COMMANDS if c.startswith("accelerate launch")])
def test_accelerate_commands_dry_run(line, tiny_run_dir):
    plan = dry_run_launch(on_tiny_run(line, tiny_run_dir))
    assert plan.num_processes >= 1 and plan.config is not None


@pytest.mark.slow
@pytest.mark.parametrize("line", ALIGN_RUNS)
def test_align_commands_load_their_config(line, tiny_run_dir):
    words = shlex.split(on_tiny_run(line, tiny_run_dir))[1:]
    path, config, _ = parse_command_line(words)
    assert config is not None, path


@pytest.mark.slow
def test_quickstart_stage_commands_are_what_the_tiny_pipeline_ran(tiny_run_dir):
    """The README's stage-by-stage commands are exactly the pipeline's stages, run by `tiny_run_dir`."""
    _, stages = planned_stages(PipelineConfig(recipe=REPO / "scripts/recipes/tiny.yaml"))
    expected = [f"align {stage} --config scripts/recipes/tiny.yaml" for stage in stages]
    documented = [
        c
        for doc, c in COMMANDS
        if doc == "README.md" and c.startswith("align ") and c.endswith("--config scripts/recipes/tiny.yaml")
    ]
    assert documented == expected
    assert all((tiny_run_dir / ".pipeline" / f"{'-'.join(s.split())}.done").exists() for s in stages)


@pytest.mark.slow
@pytest.mark.parametrize(
    "line",
    [
        c
        for _, c in COMMANDS
        if c.startswith("align ")
        and (
            "--help" in c
            or "--check_config" in c
            or "--dry_run true" in c
            or c.startswith("align label stats")
        )
    ],
)
def test_commands_that_only_inspect_really_run(line, tiny_run_dir):
    words = shlex.split(on_tiny_run(line, tiny_run_dir))
    result = subprocess.run(
        [sys.executable, "-m", "align.cli", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
