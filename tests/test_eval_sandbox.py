"""Model-written code runs in a sandbox: hostile programs fail alone, correct ones pass."""

from __future__ import annotations

import pytest

from align.eval.sandbox import run_program, run_programs

HOSTILE = {
    "infinite loop": "while True:\n    pass\n",
    "fork bomb": "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n",
    "os.system": "import os\nos.system('touch {marker}')\n",
    "huge allocation": "block = bytearray(64 * 2**30)\n",
    "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
}


def test_hostile_samples_fail_and_only_they_fail(tmp_path):
    marker = tmp_path / "escaped"
    good = "assert sum(range(10)) == 45\n"
    programs = [good, *(p.format(marker=marker) for p in HOSTILE.values()), good]
    outcomes = run_programs(programs, timeout=2.0, workers=len(programs))
    assert [o.passed for o in outcomes] == [True] + [False] * len(HOSTILE) + [True]
    reasons = dict(zip(HOSTILE, (o.reason for o in outcomes[1:-1]), strict=True))
    assert reasons["infinite loop"] == "timed out"
    assert "MemoryError" in reasons["huge allocation"]
    assert not marker.exists()


def test_a_failing_assertion_reports_its_error():
    outcome = run_program("def f(x):\n    return x\nassert f(1) == 2, 'wrong'\n")
    assert not outcome.passed and outcome.reason == "AssertionError: wrong"


@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass_in_the_sandbox():
    from align.eval.benchmarks import HUMANEVAL_FILE, read_humaneval

    (subtask,) = read_humaneval(HUMANEVAL_FILE)
    rows = subtask.splits["test"]
    assert len(rows) == 164
    outcomes = run_programs(
        [r["prefix"] + r["canonical"] + r["suffix"] for r in rows], timeout=10.0, workers=2
    )
    failed = [r["task_id"] for r, o in zip(rows, outcomes, strict=True) if not o.passed]
    assert failed == []
