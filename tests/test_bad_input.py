"""Bad input never costs data or yields a silent NaN model: each case is recreated here and must end
with the promised exit status, one line of error (no traceback), and its inputs byte-identical."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parent.parent
ALIGN = str(Path(sys.executable).with_name("align"))
FORTUNES = REPO / "data/fortunes/sample.jsonl"
SFT_ROWS = REPO / "data/tasks/sft_train.jsonl"
PREFERENCES = REPO / "data/tasks/preferences.jsonl"


def align(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([ALIGN, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) with the SHA-256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode == status, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# --- outputs never land on, in or around inputs


@pytest.mark.parametrize("where", ["the input folder", "inside the input folder", "an existing file"])
def test_corpus_refuses_an_output_dir_that_would_cost_its_inputs(tmp_path, where):
    inputs = tmp_path / "x"
    inputs.mkdir()
    shutil.copy(FORTUNES, inputs / "sample.jsonl")
    output = {"the input folder": inputs, "inside the input folder": inputs / "out",
              "an existing file": inputs / "sample.jsonl"}[where]  # fmt: skip
    before = tree_digest(tmp_path)
    result = align("corpus", "--inputs", inputs, "--output_dir", output, "--tasks", 1, "--workers", 1)
    assert_one_line_error(result, 2, "output_dir")
    assert tree_digest(tmp_path) == before


def test_corpus_replaces_only_its_own_earlier_output(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("someone's work")
    result = align("corpus", "--inputs", FORTUNES, "--output_dir", theirs, "--check_config")
    assert_one_line_error(result, 2, "--overwrite")
    assert (
        align(
            "corpus", "--inputs", FORTUNES, "--output_dir", theirs, "--overwrite", "true", "--check_config"
        ).returncode
        == 0
    )
    from align.outputs import write_marker

    write_marker(theirs, "corpus")  # as a finished `align corpus` leaves it
    assert align("corpus", "--inputs", FORTUNES, "--output_dir", theirs, "--check_config").returncode == 0


@pytest.mark.parametrize("command", ["tokenizer", "sft"])
def test_an_output_dir_that_is_a_file_is_refused_before_anything_runs(tmp_path, command):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    args = {"tokenizer": ["--inputs", FORTUNES],
            "sft": ["--model", tmp_path, "--train_file", SFT_ROWS]}[command]  # fmt: skip
    result = align(command, *args, "--output_dir", taken, "--check_config")
    assert_one_line_error(result, 2, "output_dir", "existing file")
    assert taken.read_text() == "keep me"


def test_a_corpus_of_garbage_is_an_error_and_leaves_nothing(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad.jsonl").write_bytes(b'\x00\x01\xff\xfe binary\n42\n"a string"\n{"text": 7}\n[1, 2]\n')
    before = tree_digest(inputs)
    result = align(
        "corpus", "--inputs", inputs, "--output_dir", tmp_path / "out", "--tasks", 1, "--workers", 1
    )
    assert_one_line_error(result, 1, "none of the 5 input rows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no .partial
    assert tree_digest(inputs) == before


# --- non-finite numbers


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_learning_rate_is_a_config_error(tmp_path, value):
    result = align("sft", "--model", tmp_path, "--train_file", SFT_ROWS, "--output_dir", tmp_path / "o",
                   f"--learning_rate={value}", "--check_config")  # fmt: skip
    assert_one_line_error(result, 2, "learning_rate", "finite")


def test_nan_and_infinity_in_a_data_row_are_bad_rows(tmp_path):
    from align.records import read_records
    from rewards.train import check_preference

    rows = [json.loads(line) for line in PREFERENCES.read_text().splitlines()[:40]]
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[3] = lines[3].rstrip("}") + ', "margin": NaN}'
    lines[7] = lines[7].rstrip("}") + ', "margin": Infinity}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"pairs.jsonl:4: not valid JSON \(NaN is not a JSON number\)"):
        read_records(path, check_preference, 0.01)
    assert len(read_records(path, check_preference, 0.1)) == 38
    assert check_preference({**rows[0], "margin": float("nan")}) is not None  # a NaN from Parquet


def test_non_finite_gradients_stop_training_before_the_update():
    from align.finite import check_finite_gradients

    model = torch.nn.Linear(3, 1)
    (model(torch.tensor([[1.0, float("nan"), 0.0]])).sum()).backward()
    before = model.weight.detach().clone()
    with pytest.raises(InputError, match="iteration 4: the gradient of the critic is not finite"):
        check_finite_gradients(model.parameters(), "iteration 4", "the critic")
    assert torch.equal(model.weight, before)
    model.zero_grad()
    model(torch.ones(1, 3)).sum().backward()
    check_finite_gradients(model.parameters(), "step 1")  # finite: no error


# --- recipes


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("run_dir: r\npipeline: {stages: [sft]}\nsfft: {epochs: 1}\nsft: {epochs: 1}\n", ["sfft", "did you mean 'sft'"]),
        ("run_dir: r\npipeline: {stages: [sft]}\nsft:\n  epochs: 1\n  epochs: 2\n", ["'epochs' appears twice", "line 5"]),
    ],
)  # fmt: skip
def test_recipe_typos_are_config_errors(tmp_path, text, words):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    result = align("pipeline", "--config", recipe, "--check_config")
    assert_one_line_error(result, 2, *words)


def test_an_extends_cycle_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nrun_dir: r\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    result = align("pipeline", "--config", tmp_path / "a.yaml", "--check_config")
    assert_one_line_error(result, 2, "cycle", "a.yaml -> ", "b.yaml -> ")


# --- data readers


def test_an_undecodable_line_is_a_skipped_row(tmp_path):
    from align.records import read_records
    from align.sft import check_conversation

    lines = SFT_ROWS.read_bytes().splitlines()[:40]
    lines[5] = b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert len(read_records(path, check_conversation, 0.05)) == 39
    with pytest.raises(InputError, match=r"sft.jsonl:6: not UTF-8 text"):
        read_records(path, check_conversation, 0.0)


@pytest.mark.parametrize("kind", ["gzip", "binary", "parquet"])
def test_an_unreadable_file_is_one_input_error(tmp_path, kind):
    from align.records import read_records
    from align.sft import check_conversation

    path = tmp_path / {"gzip": "x.jsonl.gz", "binary": "x.jsonl", "parquet": "x.parquet"}[kind]
    path.write_bytes({"gzip": b"\x1f\x8b\x08 truncated", "binary": bytes(range(256)) * 4,
                      "parquet": b"PAR1 not really"}[kind])  # fmt: skip
    with pytest.raises(InputError, match=str(path)):
        read_records(path, check_conversation, 0.05)


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"prompt": 42}, "must be a non-empty list"),
        ({"messages": []}, "must be a non-empty list"),
        ({"prompt": "   "}, "empty"),
        ({"messages": [{"role": "human", "content": "hi"}]}, "role must be one of system, user, assistant"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "end with a user turn"),
        ({"text": "hi"}, "needs a 'prompt' or 'messages' field"),
    ],
)  # fmt: skip
def test_bad_ppo_prompts_are_bad_rows(record, problem):
    from align.ppo.prompts import check_prompt_record

    assert problem in (check_prompt_record(record) or "")
    assert check_prompt_record({"prompt": "What is 2 + 3?"}) is None


def test_a_prompt_file_of_bad_rows_is_refused(tmp_path):
    from align.ppo.prompts import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": 42}\n{"messages": []}\n')
    with pytest.raises(InputError, match=r"2 of 2 lines are bad.*prompts.jsonl:1: 'prompt'"):
        read_prompts(path)


def test_a_reply_turn_must_be_the_assistant(tmp_path):
    from rewards.train import check_preference

    row = {"prompt": "Hi?", "chosen": [{"role": "user", "content": "Hello."}], "rejected": "Go away."}
    assert "assistant turns" in check_preference(row)
    assert check_preference({**row, "chosen": [{"role": "assistant", "content": "Hello."}]}) is None


def test_pairs_longer_than_max_length_are_counted_and_refused(tiny_model_dir, tmp_path):
    result = align("rm", "--model", tiny_model_dir, "--train_file", PREFERENCES, "--output_dir", tmp_path / "rm",
                   "--max_length", 4)  # fmt: skip
    assert_one_line_error(result, 1, "are longer than max_length=4", "raise max_length")
    assert not (tmp_path / "rm" / "model.safetensors").exists()


def test_an_mmlu_folder_without_its_dev_split_is_an_input_error(tmp_path):
    from align.eval.benchmarks import read_mmlu

    source = REPO / "tests/fixtures/eval/mmlu"
    shutil.copytree(source / "test", tmp_path / "test")
    with pytest.raises(InputError, match=r"_dev.csv: file not found"):
        read_mmlu(tmp_path)
    shutil.copytree(source / "dev", tmp_path / "dev")
    next((tmp_path / "test").glob("*_test.csv")).unlink()
    with pytest.raises(InputError, match=r"no \w+_test.csv, though dev/ has that subject"):
        read_mmlu(tmp_path)


def test_import_base_refuses_a_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    result = align("import-base", "--gguf_file", fake, "--output_dir", tmp_path / "o", "--check_config")
    assert_one_line_error(result, 2, "not a GGUF file")


# --- the label store


def test_reading_a_store_never_creates_one(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/x.sqlite"
    result = align("label", "export", "--store", url, "--output", tmp_path / "p.jsonl")
    assert_one_line_error(result, 1, "does not exist")
    assert not (tmp_path / "no").exists()


def test_a_corrupt_store_and_a_missing_driver_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "labels.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    before = tree_digest(corrupt)
    result = align("label", "export", "--store", f"sqlite:///{corrupt}", "--output", tmp_path / "p.jsonl")
    assert_one_line_error(result, 1, "cannot open")
    assert tree_digest(corrupt) == before
    result = align(
        "label",
        "export",
        "--store",
        "postgresql+nosuchdriver://u@localhost/x",
        "--output",
        tmp_path / "p.jsonl",
    )
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1


def test_export_to_a_directory_is_refused(tmp_path):
    result = align("label", "export", "--store", "sqlite:///x.sqlite", "--output", tmp_path, "--check_config")
    assert_one_line_error(result, 2, "is a directory")


# --- property-style: random bytes and random JSON values into every reader


def random_json(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "float", "str", "list", "dict"] if depth < 3 else ["int", "str"]
    kind = rng.choice(kinds)
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        keys = ["prompt", "messages", "chosen", "rejected", "margin", "role", "content", "text", "x"]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return {"null": None, "bool": rng.random() < 0.5, "int": rng.randint(-5, 5),
            "float": rng.choice([0.5, -1e308, 1e308, 3.0]),
            "str": rng.choice(["", " ", "user", "assistant", "hi", "human", "\u0000"])}[kind]  # fmt: skip


def test_every_reader_survives_random_bytes_and_random_json(tmp_path):
    from align.ppo.prompts import check_prompt_record
    from align.records import read_records
    from align.sft import check_conversation
    from rewards.train import check_preference

    rng = random.Random(0)
    checks = [check_conversation, check_preference, check_prompt_record]
    path = tmp_path / "rows.jsonl"
    for trial in range(300):
        if trial % 3 == 0:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
        else:
            path.write_text("\n".join(json.dumps(random_json(rng)) for _ in range(rng.randint(1, 8))) + "\n")
        for check in checks:
            try:
                rows = read_records(path, check, 0.5)
            except InputError:
                continue
            assert rows and all(check(r) is None for r in rows)


def test_config_loading_survives_random_values():
    from align.config import build
    from align.ppo.config import PPOConfig

    rng = random.Random(1)
    for _ in range(200):
        values = {"policy": "x", "output_dir": "y", "prompts": "z"}
        values[rng.choice(["learning_rate", "kl_coef", "iterations", "advantage", "temperature"])] = (
            random_json(rng)
        )
        with pytest.raises(ConfigError):
            build(PPOConfig, values)  # `policy: x` does not exist, so every config fails, but cleanly


def test_a_parquet_input_without_text_is_refused_at_the_door(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["no text column"]}), tmp_path / "x.parquet")
    result = align(
        "corpus", "--inputs", tmp_path / "x.parquet", "--output_dir", tmp_path / "out", "--check_config"
    )
    assert_one_line_error(result, 2, "x.parquet has no `text` column")


def test_an_output_the_file_system_refuses_is_one_line(tmp_path):
    # As root a read-only folder is still writable; a file where a folder must be is refused to anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = align(
        "corpus", "--inputs", FORTUNES, "--output_dir", blocker / "out", "--tasks", 1, "--workers", 1
    )
    assert_one_line_error(result, 1, "blocker")
    assert blocker.read_text() == "a file, not a folder"
