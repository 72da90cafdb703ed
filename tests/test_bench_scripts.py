"""Every benchmark script runs as the README says (`python scripts/bench/NAME.py`): no script name
shadows one of the repository's packages, and each one's imports and `--help` work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "scripts/bench").glob("*.py"))


def test_no_bench_script_shadows_a_package():
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert packages >= {"align", "rewards", "rollouts"}
    assert not {s.stem for s in SCRIPTS} & packages


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_starts(script):
    result = subprocess.run(
        [sys.executable, str(script.relative_to(REPO)), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage" in result.stdout.lower()
