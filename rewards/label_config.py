"""Configs of the `align label` commands: add, judge, serve, stats, export (light: no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from align.config import check_exists, check_positive, check_range
from align.errors import ConfigError
from rollouts.factory import EngineConfig

ASPECTS = ("helpful", "harmless", "honest")
"""The aspects of a reply that the InternLM report's preference data judges."""
CRITERIA = (*ASPECTS, "overall")
"""What a label judges: each aspect, and `overall`, the one a single reward model trains on. The
one list of them: the store, the app, the judge, the rules and the RM's data checks all read it."""


@dataclass
class LabelStoreConfig:
    store: str = "sqlite:///labels.sqlite"
    """SQLAlchemy URL of the preference store (SQLite file by default; e.g. postgresql+psycopg://...)."""

    def __post_init__(self) -> None:
        if "://" not in self.store:
            raise ConfigError(
                f"store: expected an SQLAlchemy URL such as sqlite:///labels.sqlite, got {self.store!r}"
            )


@dataclass
class LabelAddConfig(LabelStoreConfig):
    jsonl: Path | None = None
    """Import comparisons from this JSONL: one {"prompt": str or messages, "responses": [str or
    {"text", "model", "checkpoint"}, ...]} per line (two or more responses)."""
    prompts: Path | None = None
    """Generate candidates for the prompts in this JSONL (one {"prompt": ...} per line)."""
    prompt_limit: int = 0
    """Sample candidates for only the first this many of `prompts` (0: all of them)."""
    checkpoints: list[str] = field(default_factory=list)
    """One or two model directories to sample candidates from (with `prompts`); with two, each
    comparison pits one sample of each against the other."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine (`kind`: vllm in-process, server = a running `align serve`, hf); with a
    server, `checkpoints` names the served checkpoint (for its tokenizer and the source column)."""
    k: int = 2
    """Candidates per prompt and checkpoint (one comparison per prompt holds them all)."""
    max_new_tokens: int = 64
    """Longest generated response, in tokens."""
    temperature: float = 1.0
    """Sampling temperature for candidates."""
    seed: int = 0
    """Seed for sampling and for the randomised A/B order of assignments."""
    annotators: Path | None = None
    """JSONL of annotators to create: one {"name", "password", "role": annotator|admin} per line."""
    overlap: int = 1
    """Annotators per comparison (assignments are (re)balanced over all annotators after adding)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_exists("jsonl", self.jsonl)
        check_exists("prompts", self.prompts)
        check_exists("annotators", self.annotators)
        if self.prompts is not None and not 1 <= len(self.checkpoints) <= 2:
            raise ConfigError(
                f"checkpoints: give one or two model directories with prompts, got {len(self.checkpoints)}"
            )
        for i, checkpoint in enumerate(self.checkpoints):
            check_exists(f"checkpoints[{i}]", checkpoint)
        check_positive("k", self.k)
        if self.prompts is not None and len(self.checkpoints) == 1 and self.k < 2:
            raise ConfigError("k: one checkpoint needs k >= 2 candidates per prompt to compare")
        check_positive("max_new_tokens", self.max_new_tokens)
        check_range("temperature", self.temperature, 0.0)
        check_positive("overlap", self.overlap)
        check_range("prompt_limit", self.prompt_limit, 0)


@dataclass
class LabelJudgeConfig(LabelStoreConfig):
    annotator: str = "rule-judge"
    """Name the programmatic judge labels under (created if missing, with a random password)."""
    tie_margin: float = 0.05
    """Score differences at most this large are a tie."""
    bad_below: float = 0.25
    """Both responses scoring below this on a criterion are both bad."""
    limit: int = 0
    """Label at most this many comparisons (0: all not yet labelled by the judge)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("tie_margin", self.tie_margin, 0.0)
        check_range("limit", self.limit, 0)


@dataclass
class LabelServeConfig(LabelStoreConfig):
    host: str = "127.0.0.1"
    """Interface to bind; the default keeps the app on this machine."""
    port: int = 7860
    """TCP port of the app."""
    guidelines: Path | None = None
    """Markdown file with the labelling guidelines (default: the built-in ones)."""
    concurrency: int = 8
    """Requests the app handles at once."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("port", self.port, 1, 65535)
        check_exists("guidelines", self.guidelines)
        check_positive("concurrency", self.concurrency)


@dataclass
class LabelStatsConfig(LabelStoreConfig):
    criteria: list[str] = field(default_factory=lambda: list(CRITERIA))
    """Criteria to report agreement for."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_criteria(self.criteria)


@dataclass
class LabelExportConfig(LabelStoreConfig):
    output: Path = Path("preferences.jsonl")
    """Where to write the TRL-format preference JSONL."""
    criteria: list[str] = field(default_factory=lambda: ["overall"])
    """Verdicts to export, each as its own rows. Keep `overall` alone for one scalar reward model:
    per-criterion verdicts can rank the same pair both ways (see `rewards/store_io.py`)."""
    min_margin: float = 0.0
    """Drop pairs whose margin (net share of annotators preferring `chosen`) is below this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_criteria(self.criteria)
        check_range("min_margin", self.min_margin, 0.0, 1.0)
        if self.output.is_dir():
            raise ConfigError(
                f"output: {self.output} is a directory; give a file path (e.g. preferences.jsonl)"
            )


def _check_criteria(criteria: list[str]) -> None:
    bad = [c for c in criteria if c not in CRITERIA]
    if bad or not criteria:
        raise ConfigError(f"criteria: expected a non-empty list of {', '.join(CRITERIA)}, got {criteria!r}")
