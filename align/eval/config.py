"""Configs of `align eval` and `align eval report` (light: no torch, vLLM or lm-eval imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from align.config import check_positive
from align.errors import ConfigError

BENCHMARK_NAMES = [
    "mmlu",
    "ceval",
    "agieval",
    "gaokao",
    "race",
    "truthfulqa",
    "truthfulqa_mc2",
    "crows_pairs",
    "gsm8k",
    "triviaqa",
    "nq",
    "humaneval",
    "mbpp",
    "demo",
    "instructions",
]


@dataclass
class EvalConfig:
    """Evaluate checkpoints on local benchmark files with lm-evaluation-harness."""

    models: dict[str, str]
    """Row label -> HF checkpoint directory, or an OpenAI-compatible endpoint URL
    (`http://127.0.0.1:8000/v1`, generation tasks only; key in OPENAI_API_KEY), e.g.
    {base: runs/demo/base}."""
    benchmarks: dict[str, str]
    """Benchmark -> its local files in the published format (a folder or a file; `builtin` for
    HumanEval's 164 shipped problems). Benchmarks: mmlu, ceval, agieval, gaokao, race, truthfulqa (MC1),
    truthfulqa_mc2, crows_pairs, gsm8k, triviaqa, nq, humaneval, mbpp, demo, instructions. Any other name is your
    own lm-eval task (or group): its location is the folder of task YAMLs that defines it (lm-eval's
    `include_path`), or `lm_eval` for a task of lm-eval's own registry whose data is local."""
    output_dir: Path = Path("runs/eval")
    """Where results.json, the rendered lm-eval tasks, tables and charts are written."""
    backend: Literal["vllm", "hf"] = "vllm"
    """Engine for checkpoint directories: in-process vLLM, or lm-eval's own `hf` model."""
    max_model_len: int | None = None
    """Context length (default: the model's max_position_embeddings)."""
    batch_size: int = 16
    """Batch size of the `hf` backend (vLLM batches on its own)."""
    limit: int | None = None
    """Score at most this many questions per task (quick looks; None scores them all)."""
    references: Path | None = None
    """YAML of reference rows (published numbers) added to the report tables."""
    seed: int = 1234
    """Seed for lm-eval (its few-shot draws too) and vLLM; lm-eval's own default, so few-shot examples
    drawn at random (GSM8K) are the ones `lm_eval` run directly draws."""
    report: bool = True
    """Render the tables and charts after evaluating."""

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models: give at least one label: checkpoint")
        if not self.benchmarks:
            raise ConfigError("benchmarks: give at least one benchmark: path")
        for name, location in self.benchmarks.items():
            folder = Path(location)
            if name in BENCHMARK_NAMES or location == "lm_eval":
                continue
            if not folder.is_dir() or not any(folder.rglob("*.yaml")):
                raise ConfigError(
                    f"benchmarks.{name}: not a built-in benchmark ({', '.join(BENCHMARK_NAMES)}), so its "
                    "location must be a folder of your own lm-eval task YAMLs that defines it, or "
                    f"`lm_eval` for a task of lm-eval's registry; got {location!r}"
                )
        for label, location in self.models.items():
            if not location.startswith(("http://", "https://")) and not Path(location).is_dir():
                raise ConfigError(f"models.{label}: {location} is not a checkpoint directory or URL")
        if self.limit is not None:
            check_positive("limit", self.limit)
        if self.max_model_len is not None:
            check_positive("max_model_len", self.max_model_len)
        check_positive("batch_size", self.batch_size)
        if self.references is not None and not self.references.is_file():
            raise ConfigError(f"references: file not found: {self.references}")


@dataclass
class ReportConfig:
    """Render Markdown and LaTeX tables and bar charts from a saved results.json, without re-running."""

    output_dir: Path = Path("runs/eval")
    """The folder `align eval` wrote (holds results.json); tables and charts are written there."""
    references: Path | None = None
    """YAML of reference rows; default: the one results.json names."""
    models: list[str] = field(default_factory=list)
    """Row order (labels of results.json and the references); default: evaluated models, then references."""

    def __post_init__(self) -> None:
        if not (self.output_dir / "results.json").is_file():
            raise ConfigError(
                f"output_dir: {self.output_dir / 'results.json'} not found; run `align eval` first"
            )
        if self.references is not None and not self.references.is_file():
            raise ConfigError(f"references: file not found: {self.references}")
