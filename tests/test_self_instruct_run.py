"""`align self-instruct` end to end on the tiny model: TRL-format output, filters applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.self_instruct import SelfInstructConfig, read_seed_tasks, rouge_l, self_instruct, words

SEEDS = Path(__file__).resolve().parent.parent / "data" / "self_instruct" / "seed_tasks.jsonl"

pytestmark = pytest.mark.slow


def assert_trl_conversations_without_near_duplicates(path: Path, threshold: float) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows, "no task survived the filters"
    tasks = []
    for row in rows:
        assert list(row) == ["messages"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
        tasks.append(row["messages"][0]["content"])
    seeds = [s["instruction"] for s in read_seed_tasks(SEEDS)]
    for i, task in enumerate(tasks):
        for other in seeds + tasks[:i]:
            assert rouge_l(words(task), words(other)) < threshold, (task, other)
    return tasks


def test_self_instruct_writes_filtered_conversations_with_the_in_process_engine(
    vllm_engine, tiny_model_dir, tmp_path
):
    config = SelfInstructConfig(
        seed_tasks=SEEDS, model=tiny_model_dir, output=tmp_path / "new.jsonl", num_tasks=20, max_rounds=3,
        prompts_per_round=32, min_tokens=3, max_new_tokens=10, seed=0,
    )  # fmt: skip
    stats = self_instruct(config, vllm_engine)
    tasks = assert_trl_conversations_without_near_duplicates(config.output, config.max_similarity)
    assert stats["written"] == len(tasks) <= 20
    assert (
        sum(v for k, v in stats.items() if k.startswith("dropped")) > 0
    )  # junk from a random model is caught


def test_align_self_instruct_prompts_an_align_serve_endpoint(vllm_server, tiny_model_dir, tmp_path):
    from align.cli import main

    output = tmp_path / "served.jsonl"
    engine = {
        "kind": "server",
        "base_url": f"http://127.0.0.1:{vllm_server.port}",
        "api_key": vllm_server.api_key,
        "served_model_name": vllm_server.served_model_name,
    }
    status = main(
        ["self-instruct", "--seed_tasks", str(SEEDS), "--model", str(tiny_model_dir), "--output", str(output),
         "--engine", json.dumps(engine), "--num_tasks", "5", "--max_rounds", "2", "--max_new_tokens", "10",
         "--include_seeds", "true"]
    )  # fmt: skip
    assert status == 0
    tasks = output.read_text(encoding="utf-8")
    assert "12 + 30" in tasks  # the seeds with responses come first
