"""`align corpus`: the cleaning pipeline on datatrove, in three executor stages.

1. filter (`tasks` shards in parallel): read -> language id -> rule filters -> quality filter,
   written to `filtered/<rank>.jsonl`;
2. dedup (one task, global): near-duplicate documents (MinHash LSH), then exact duplicate
   paragraphs, written to `data/00000.jsonl`;
3. finalize (one task): the stats report, then the finished directory is renamed into place.

Everything is written under `.<output_dir>.partial/` beside the output and renamed only when
complete, so a crash never leaves shards that look finished. The executor is a config choice:
`local` runs here; `slurm` and `ray` submit the same three stages, each depending on the last.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from align.corpus.config import CorpusConfig
from align.corpus.dedup import NearDuplicateFilter, ParagraphDedup
from align.corpus.documents import input_files
from align.corpus.language import LanguageFilter
from align.corpus.quality import QualityFilter
from align.corpus.report import merge_counts, write_report
from align.corpus.rules import RuleFilter, RuleThresholds
from align.corpus.steps import ReadInputs, ReadShards, WriteShard
from align.errors import InputError
from align.outputs import MARKER, write_marker

log = logging.getLogger(__name__)


class Finalize(PipelineStep):
    """Writes the report and renames the finished output into place (replacing an older one)."""

    name = "finalize"
    type = "✅ - FINALIZE"

    def __init__(self, work_dir: str, output_dir: str, stages: list[str]):
        super().__init__()
        self.work_dir = work_dir
        self.output_dir = output_dir
        self.stages = stages

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work, output = Path(self.work_dir), Path(self.output_dir)
        final = work / "final"
        report = merge_counts(work / "counts", self.stages)
        if report["stages"][0]["docs_in"] == 0:
            raise InputError("corpus: no documents in the inputs (every input file is empty)")
        (final / "dropped").mkdir(parents=True, exist_ok=True)
        write_report(report, final)
        write_marker(final, "corpus")
        old = output.with_name(f".{output.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if output.exists():  # two renames: the output path always holds a complete corpus or nothing
            output.replace(old)
        final.replace(output)
        shutil.rmtree(old, ignore_errors=True)
        yield from ()


def check_usable(work: Path) -> None:
    """After reading: at least one input document must be usable (a file of garbage is an error,
    not an empty corpus)."""
    (read,) = merge_counts(work / "counts", ["read"])["stages"]
    if read["docs_out"]:
        return
    if not read["docs_in"]:
        raise InputError("inputs: no documents (every input file is empty)")
    reasons = ", ".join(f"{n} {reason}" for reason, n in read["dropped"].items())
    raise InputError(f"inputs: none of the {read['docs_in']} input rows is a usable document ({reasons})")


def stage_names(config: CorpusConfig) -> list[str]:
    quality = ["quality"] if config.quality_model else []
    return ["read", "language", "rules", *quality, "near_dup", "paragraph_dedup"]


def build_stages(config: CorpusConfig, work: Path) -> list[tuple[str, list[PipelineStep], int]]:
    """The three (name, pipeline, tasks) stages."""
    w, head = str(work), config.dropped_text_chars
    thresholds = RuleThresholds(**{k: getattr(config, k) for k in RuleThresholds.__dataclass_fields__
                                   if hasattr(config, k)})  # fmt: skip
    filtering: list[PipelineStep] = [
        ReadInputs(w, [str(p.resolve()) for p in config.inputs], config.max_chars, head),
        LanguageFilter(w, config.languages, config.min_language_score, head),
        RuleFilter(w, thresholds, head),
    ]
    if config.quality_model:
        filtering.append(
            QualityFilter(w, str(config.quality_model.resolve()), config.min_quality_score, head)
        )
    filtering.append(WriteShard(str(work / "filtered")))
    dedup = [
        ReadShards(str(work / "filtered")),
        NearDuplicateFilter(
            w, config.near_dup_threshold, config.num_perm, config.num_bands, config.seed, head
        ),
        ParagraphDedup(w, config.min_paragraph_chars, head),
        WriteShard(str(work / "final" / "data"), flat=True),
    ]
    finalize = [Finalize(w, str(config.output_dir.resolve()), stage_names(config))]
    return [("filter", filtering, config.tasks), ("dedup", dedup, 1), ("finalize", finalize, 1)]


def make_executors(config: CorpusConfig, work: Path) -> list:
    """One datatrove executor per stage, of the configured kind; cluster stages depend on the last."""
    executors: list = []
    for name, pipeline, tasks in build_stages(config, work):
        logs = str(work / "logs" / name)
        workers = min(config.workers, tasks)
        previous = executors[-1] if executors else None
        if config.executor == "local":
            from datatrove.executor import LocalPipelineExecutor

            executors.append(LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs))
        elif config.executor == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            executors.append(SlurmPipelineExecutor(
                pipeline, tasks=tasks, workers=workers, time=config.slurm_time, partition=config.slurm_partition,
                logging_dir=logs, depends=previous, job_name=f"corpus-{name}", skip_completed=False,
            ))  # fmt: skip
        else:
            from datatrove.executor.ray import RayPipelineExecutor

            executors.append(RayPipelineExecutor(
                pipeline, tasks=tasks, workers=workers, logging_dir=logs, depends=previous, skip_completed=False
            ))  # fmt: skip
    return executors


def run_corpus(config: CorpusConfig) -> Path:
    """Clean the inputs into `config.output_dir`; returns it."""
    if not input_files(config.inputs):
        raise InputError(f"inputs: no .jsonl/.parquet/.txt files under {', '.join(map(str, config.inputs))}")
    output = config.output_dir.resolve()
    work = output.with_name(f".{output.name}.partial")
    executors = make_executors(config, work)
    if config.dry_run:
        for executor in executors:
            steps = " -> ".join(getattr(s, "name", type(s).__name__) for s in executor.pipeline)
            log.info("%s: %d task(s): %s", type(executor).__name__, executor.world_size, steps)
        return output
    if work.exists():  # left by a run that died; never reused
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log.info(
        "corpus: %s executor, %d filter tasks, %d workers", config.executor, config.tasks, config.workers
    )
    if config.executor == "local":
        try:
            for (
                executor
            ) in executors:  # in order; each stage's shards are complete before the next reads them
                executor.run()
                if executor is executors[0]:
                    check_usable(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # nothing half-written is left behind
        if not (output / MARKER).is_file():
            raise InputError(f"corpus: a stage failed; see the logs above (nothing was written to {output})")
        log.info("corpus written to %s (report: %s)", output, output / "report.md")
    else:
        executors[-1].run()  # submits the chain; finalize renames the output when the cluster is done
        log.info("corpus: submitted to %s; the output appears at %s when done", config.executor, output)
    return output
