"""Bad input and failures: counted drops with reasons, clear errors, no half-written output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.corpus.config import CorpusConfig
from align.corpus.pipeline import make_executors, run_corpus
from align.errors import ConfigError, InputError

GOOD = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。这是李白的一首诗，很多人都会背。",
]


def small_config(tmp_path: Path, inputs: list[Path], **overrides) -> CorpusConfig:
    return CorpusConfig(
        **{"inputs": inputs, "output_dir": tmp_path / "out", "tasks": 1, "workers": 1, **overrides}
    )


@pytest.mark.slow
def test_bad_lines_are_counted_as_dropped_with_their_reason(tmp_path):
    bad = tmp_path / "bad.jsonl"
    with bad.open("wb") as f:
        f.write(json.dumps({"text": GOOD[0]}).encode() + b"\n")
        f.write(b'{"text": "caf\xe9 au lait"}\n')  # latin-1, not UTF-8
        f.write(json.dumps({"body": "no text field"}).encode() + b"\n")
        f.write(b"{not json\n")
        f.write(json.dumps({"text": "x" * 50_000_000}).encode() + b"\n")  # a 50 MB single line
        f.write(json.dumps({"text": GOOD[1], "id": "poem"}, ensure_ascii=False).encode() + b"\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = run_corpus(small_config(tmp_path, [bad, tmp_path / "empty.jsonl"]))
    reasons = [json.loads(line)["reason"] for line in (out / "dropped" / "read-00000.jsonl").open()]
    assert [r.split(" (")[0] for r in reasons] == [
        "not UTF-8",
        "missing text field",
        "invalid JSON",
        "too long",
    ]
    assert "bad.jsonl:2" in (out / "dropped" / "read-00000.jsonl").read_text()
    texts = [json.loads(line)["text"] for line in (out / "data" / "00000.jsonl").open()]
    assert texts == GOOD
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["docs_in"] == 6 and report["stages"][0]["docs_out"] == 2


def test_a_failed_run_leaves_the_previous_output_intact_and_nothing_complete_looking(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in GOOD), encoding="utf-8"
    )
    out = run_corpus(small_config(tmp_path, [good]))
    before = (out / "data" / "00000.jsonl").read_bytes()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["no text column"]}), tmp_path / "broken.parquet")
    with pytest.raises(ConfigError, match="broken.parquet has no `text` column"):  # at the door
        run_corpus(small_config(tmp_path, [good, tmp_path / "broken.parquet"]))
    assert (out / "data" / "00000.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "good.jsonl", "out"]


def test_inputs_without_any_document_are_an_input_error(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(InputError, match="no documents"):
        run_corpus(small_config(tmp_path, [tmp_path / "empty.jsonl"]))


@pytest.mark.parametrize(
    ("override", "key"),
    [({"near_dup_threshold": 1.5}, "near_dup_threshold"), ({"num_bands": 7}, "num_bands"),
     ({"languages": []}, "languages"), ({"quality_model": Path("missing.bin")}, "quality_model")],
)  # fmt: skip
def test_bad_config_values_name_the_key(tmp_path, override, key):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(ConfigError, match=key):
        small_config(tmp_path, [tmp_path / "a.jsonl"], **override)


@pytest.mark.parametrize("executor", ["slurm", "ray"])
def test_the_same_pipeline_builds_for_cluster_executors_and_dry_runs(tmp_path, executor):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": GOOD[0]}) + "\n")
    config = small_config(tmp_path, [tmp_path / "a.jsonl"], executor=executor, tasks=8, dry_run=True)
    stages = make_executors(config, tmp_path / "work")
    assert [type(e).__name__ for e in stages] == [f"{executor.capitalize()}PipelineExecutor"] * 3
    assert [e.world_size for e in stages] == [8, 1, 1]
    assert stages[1].depends is stages[0] and stages[2].depends is stages[1]
    run_corpus(config)
    assert not (tmp_path / "out").exists()


def test_plain_text_and_parquet_inputs_are_read_with_their_ids_and_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "poem.txt").write_text(GOOD[1], encoding="utf-8")
    pq.write_table(pa.table({"text": [GOOD[0]], "id": ["fox"], "source": ["web"]}), tmp_path / "rows.parquet")
    out = run_corpus(small_config(tmp_path, [tmp_path / "poem.txt", tmp_path / "rows.parquet"]))
    rows = [json.loads(line) for line in (out / "data" / "00000.jsonl").open()]
    assert [(r["id"], r["source"], r["lang"]) for r in rows] == [("poem", "poem", "zh"), ("fox", "web", "en")]
