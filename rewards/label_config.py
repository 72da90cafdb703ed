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
MAX_RANKED = 6
"""The most responses one ranking task shows (the app has this many response slots)."""
TASKS = ("pair", "rank")
"""What an annotator does with a comparison: judge one pair of its responses, or rank them all."""
GOLD_KINDS = ("gold", "attention")
"""A gold item has a known better response; an attention check has an obvious one."""
EXPORT_FORMATS = ("preference", "ranking", "kto")
TIES = ("skip", "tie")


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
    task: str = "pair"
    """What annotators do with the comparisons added by this command: `pair` (judge one pair of
    the responses per criterion) or `rank` (rank all of them, ties allowed; at most 6 responses)."""
    gold: Path | None = None
    """Import gold items and attention checks from this JSONL: one {"prompt", "better": str,
    "worse": str, "kind": "gold"|"attention"} per line. They are mixed into annotators' queues at
    `gold_rate`, scored in `align label stats` and never exported."""
    gold_rate: float = 0.0
    """Share of each annotator's newly assigned work that is gold items and attention checks."""
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
    """Annotators per comparison (assignments are (re)balanced over all annotators after adding);
    with `select: disagreement`, the annotators added to each comparison whose labels conflict."""
    select: str = "random"
    """What to queue (`rewards/selection.py`): `random` (the new comparisons, or `budget` of them at
    random), `uncertain` (of each prompt's k candidates the pair `reward_model` is least sure
    about, smallest |score margin| first) or `disagreement` (re-queue comparisons whose labels
    conflict to more annotators)."""
    reward_model: Path | None = None
    """The current reward model (`align rm`'s output directory); `select: uncertain` needs it."""
    budget: int = 0
    """Comparisons to queue that are new to the store (0: all); with `disagreement`, how many to re-queue."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_exists("jsonl", self.jsonl)
        check_exists("prompts", self.prompts)
        check_exists("annotators", self.annotators)
        check_exists("gold", self.gold)
        if self.task not in TASKS:
            raise ConfigError(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        check_range("gold_rate", self.gold_rate, 0.0, 0.9)
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
        selections = ("random", "uncertain", "disagreement")
        if self.select not in selections:
            raise ConfigError(f"select: expected one of {', '.join(selections)}, got {self.select!r}")
        check_range("budget", self.budget, 0)
        if self.select == "uncertain":
            if self.reward_model is None:
                raise ConfigError(
                    "reward_model: `select: uncertain` ranks pairs by the current reward model's "
                    "margin; give its directory (--reward_model DIR, the output of `align rm`)"
                )
            check_exists("reward_model", self.reward_model)
            if self.jsonl is None and self.prompts is None:
                raise ConfigError("select: `uncertain` picks from new candidates; give jsonl or prompts")
            if self.task != "pair":
                raise ConfigError("task: `select: uncertain` queues pairs; use task: pair")
        if self.select == "disagreement" and (self.jsonl is not None or self.prompts is not None):
            raise ConfigError(
                "select: `disagreement` re-queues comparisons already in the store; give no jsonl or "
                "prompts (add new ones in a separate `align label add`)"
            )


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
    format: str = "preference"
    """`preference`: TRL preference rows (prompt, chosen, rejected), from pair labels and the pairs
    that rankings imply; `ranking`: one row per ranking (and per decided pair label) with every
    response and its rank; `kto`: TRL's unpaired rows (prompt, completion, label)."""
    ties: str = "skip"
    """Pairs whose votes are equal with at least one tie among them: `skip` them, or write them
    as `tie` rows (`"tie": true`, margin 0) for a trainer that models ties. `align rm` has no tie
    loss: it would read a tie row as a preference, so keep `skip` for it."""
    min_gold_accuracy: float = 0.0
    """Leave out every label of annotators whose accuracy on gold items is below this (0: keep
    all). Annotators who have answered no gold item yet are kept (and named in the log)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_criteria(self.criteria)
        check_range("min_margin", self.min_margin, 0.0, 1.0)
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {self.format!r}")
        if self.ties not in TIES:
            raise ConfigError(f"ties: expected one of {', '.join(TIES)}, got {self.ties!r}")
        check_range("min_gold_accuracy", self.min_gold_accuracy, 0.0, 1.0)
        if self.output.is_dir():
            raise ConfigError(
                f"output: {self.output} is a directory; give a file path (e.g. preferences.jsonl)"
            )


def _check_criteria(criteria: list[str]) -> None:
    bad = [c for c in criteria if c not in CRITERIA]
    if bad or not criteria:
        raise ConfigError(f"criteria: expected a non-empty list of {', '.join(CRITERIA)}, got {criteria!r}")
