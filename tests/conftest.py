"""Shared, session-scoped fixtures: one tiny tokenizer + model for the whole run, built offline."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# vLLM in this process, and no telemetry or hub look-ups from any library.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def tiny_texts(n: int = 3000, seed: int = 0) -> list[str]:
    """English, Chinese and arithmetic lines: enough for a tokenizer that covers the demo's scripts."""
    rng = random.Random(seed)
    english = [
        "the",
        "a",
        "of",
        "to",
        "and",
        "in",
        "is",
        "it",
        "you",
        "that",
        "he",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
    ]
    chinese = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从"
    texts = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if i % 3 == 0:
            texts.append(" ".join(rng.choice(english) for _ in range(rng.randint(5, 20))).capitalize() + ".")
        elif i % 3 == 1:
            texts.append("".join(rng.choice(chinese) for _ in range(rng.randint(5, 30))) + "。")
        else:
            texts.append(f"What is {a} + {b}? {a} + {b} = {a + b}. {a} 加 {b} 等于 {a + b}。")
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and its byte-level BPE tokenizer (2k vocabulary), saved in HF format."""
    from align.models import build_model, train_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(tiny_texts(), vocab_size=2048)
    model = build_model("tiny", tokenizer, seed=0, max_position_embeddings=512)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- rollouts (issue 5/7): one in-process vLLM engine and one `align serve` server per session ---


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path):
    """An in-process `VLLMEngine` over `tiny_model_dir`, shared by the whole session.

    A test that pushes other weights with `load_weights` must push back the tiny model's
    (`tiny_model_dir`) when done, or push what it needs first.
    """
    from rollouts.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model_dir, max_model_len=512, kv_cache_gib=1)
    yield engine
    engine.close()


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One `align serve` process over `tiny_model_dir` on a free loopback port, for the session.

    Yields the `ServeConfig` it runs (`.port`, `.api_key`, `.served_model_name`); the server's
    base URL is `http://127.0.0.1:{port}` and its log is `config.log_file`. Weight updates are on:
    a test that pushes other weights must push the tiny model's back when done.
    """
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from align.serve import ServeConfig
    from rollouts.server import die_with_parent

    config = ServeConfig(
        checkpoint=tiny_model_dir,
        port=free_port(),
        api_key="test-key",
        served_model_name="tiny",
        log_file=tmp_path_factory.mktemp("vllm-server") / "server.log",
    )
    command = [sys.executable, "-m", "align.cli", "serve", str(config.checkpoint), "--port", str(config.port)]
    command += ["--api_key", config.api_key, "--served_model_name", config.served_model_name]
    command += ["--log_file", str(config.log_file), "--weight_updates", "true"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"align serve exited early: {process.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{config.port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("align serve did not come up") from None
                time.sleep(0.5)
        yield config
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- pretrain (issue 3/7): a small mixed-language corpus, a two-phase recipe, one uninterrupted run ---


@pytest.fixture(scope="session")
def pretrain_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL shard in the corpus stage's format (id, text, lang, source): en, zh and math rows."""
    import json

    path = tmp_path_factory.mktemp("pretrain-corpus") / "shard-00000.jsonl"
    langs = ["en", "zh", "math"]
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(tiny_texts(900, seed=1)):
            row = {"id": f"doc-{i}", "text": text, "lang": langs[i % 3], "source": "tests"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def pretrain_recipe(tiny_model_dir: Path, pretrain_corpus: Path):
    """`make(output_dir, **fields) -> recipe path`: two 5-step phases whose mixtures differ."""
    import yaml

    def make(output_dir: Path, **fields) -> Path:
        phase = {"batch_size": 4, "seq_len": 32, "max_steps": 5, "lr": 3e-3, "warmup_ratio": 0.2}
        recipe = {
            "model": "tiny",
            "tokenizer": str(tiny_model_dir),
            "output_dir": str(output_dir),
            "save_steps": 2,
            "keep": 2,
            "report_to": ["none"],
            "peak_flops": 1e11,
            "sources": [
                {"name": "en", "path": str(pretrain_corpus), "lang": ["en"]},
                {"name": "zh", "path": str(pretrain_corpus), "lang": ["zh"]},
                {"name": "other", "path": str(pretrain_corpus), "exclude_lang": ["en", "zh"]},
            ],
            "phases": [
                {**phase, "mixture": {"en": 0.6, "zh": 0.3, "other": 0.1}},
                {**phase, "mixture": {"en": 0.2, "zh": 0.3, "other": 0.5}, "lr": 1e-3},
            ],
            **fields,
        }
        path = Path(output_dir).with_suffix(".yaml")
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return make


def _run_align(args: list[str], timeout: int = 300):
    import subprocess
    import sys

    # One thread: tiny models gain nothing from two, and with a busy CPU (tests in parallel) the
    # threads' barrier waits made steps up to 50x slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "align.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@pytest.fixture(scope="session")
def run_align():
    """`run_align(args) -> CompletedProcess`: `python -m align.cli ARGS` in a real subprocess."""
    return _run_align


@pytest.fixture(scope="session")
def pretrain_baseline(pretrain_recipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of one uninterrupted single-process run of the two-phase recipe."""
    out = tmp_path_factory.mktemp("pretrain-baseline") / "run"
    result = _run_align(["pretrain", "--config", str(pretrain_recipe(out))])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# --- corpus (issue 2/7): a planted corpus, a quality scorer trained on its gold part, one cleaned run ---


@pytest.fixture(scope="session")
def planted_corpus(tmp_path_factory: pytest.TempPathFactory):
    """`align.corpus.planted.PlantedCorpus`: real fortunes plus junk, near-dups, repeated paragraphs."""
    from align.corpus.planted import make_planted_corpus

    return make_planted_corpus(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def corpus_quality_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fastText quality scorer trained on the 360 sample fortunes vs degraded copies."""
    from align.corpus.config import QualityTrainConfig
    from align.corpus.planted import SAMPLE
    from align.corpus.quality import train_quality

    out = tmp_path_factory.mktemp("quality")
    return train_quality(QualityTrainConfig(gold=[SAMPLE], output_dir=out, epochs=20))


@pytest.fixture(scope="session")
def corpus_config(planted_corpus, corpus_quality_model, tmp_path_factory: pytest.TempPathFactory):
    """`corpus_config(**overrides)`: a CorpusConfig over the planted corpus, into a fresh directory."""
    from align.corpus.config import CorpusConfig

    def make(**overrides):
        values = dict(inputs=planted_corpus.files, output_dir=tmp_path_factory.mktemp("corpus") / "out",
                      quality_model=corpus_quality_model, tasks=3, workers=2)  # fmt: skip
        return CorpusConfig(**{**values, **overrides})

    return make


@pytest.fixture(scope="session")
def planted_output(corpus_config) -> Path:
    """The cleaned planted corpus (2 workers, 3 filter tasks)."""
    from align.corpus.pipeline import run_corpus

    return run_corpus(corpus_config())


# --- the whole tiny pipeline, once per session (docs commands and notebooks build on its outputs)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding every stage's output: `align pipeline` on scripts/recipes/tiny.yaml."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("tiny-run")
    command = [sys.executable, "-m", "align.cli", "pipeline", "--config", "scripts/recipes/tiny.yaml"]
    result = subprocess.run(
        [*command, "--run_dir", str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


# --- labelling (issue 6/7 of v0.2): a real PostgreSQL server from Debian's packages, per session ---


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port (initdb, pg_ctl), run as the
    `postgres` user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed: run `bash scripts/setup.sh --test-tools`")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="align-pg-"))
        self.port = free_port()
        self._databases = 0
        if os.geteuid() == 0:
            os.chown(self.dir, *self._postgres_ids())
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "align", "--no-sync")
        self.start()

    @staticmethod
    def _postgres_ids() -> tuple[int, int]:
        import pwd

        user = pwd.getpwnam("postgres")
        return user.pw_uid, user.pw_gid

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-k {self.dir} -c listen_addresses=127.0.0.1 -p {self.port}"
        self._run(
            "pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )

    def kill(self) -> None:
        """Stop at once, as a crash would: no checkpoint, clients cut off; recovery replays the WAL."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"store_{self._databases}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=align dbname=postgres", autocommit=True
        ) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://align@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session; `new_database()` gives each test its own store."""
    import shutil

    server = PostgresServer()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)
