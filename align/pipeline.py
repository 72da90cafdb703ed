"""Run the stages of a multi-stage recipe in order, each as its own `align` process.

A multi-stage recipe has a `pipeline: {stages: [...]}` section listing command paths
(`corpus train-quality`, `sft`, `label export`, ...) and one section per command, named by the
path joined with '-' (`corpus-train-quality`, `label-export`); a command that runs twice names its
runs (`ppo@rlvr`, `ppo@rlhf`, each with its own section). Each stage runs in a fresh process
(`python -m align.cli ...`), so a stage's memory, vLLM engine or server dies with it. A finished
stage leaves a marker under `<run_dir>/.pipeline/` with a digest of its config section. Re-running
the pipeline skips a finished stage unless its section changed since, an earlier stage ran again
(its outputs are this stage's inputs) or `--force` is given, so an interrupted demo continues where
it stopped and an edited recipe redoes what the edit touches. A training stage that is redone starts
over: the earlier run's checkpoints go first, or it would resume from its own last checkpoint and
train nothing; one interrupted before it finished resumes. Data files that changed on disk are
not noticed: use `--force` (or `--only`) then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from align.checkpoint import CHECKPOINTS_DIR
from align.cli import stage_parts
from align.config import check_exists, read_recipe, substitute
from align.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Which recipe to run, where, and which of its stages."""

    recipe: Path = Path("scripts/recipes/demo.yaml")
    """The multi-stage recipe (a `pipeline` section plus one section per stage); `--config` sets it."""
    stages: list[str] | None = None
    """The recipe's stages, in order (its `pipeline.stages`; read from the recipe when not given)."""
    run_dir: str | None = None
    """Where every stage writes (replaces the recipe's `run_dir`)."""
    only: list[str] | None = None
    """Run just these stages (command paths as listed in the recipe), in recipe order."""
    force: bool = False
    """Re-run stages that already finished in this run directory."""
    accelerate_config: Path | None = None
    """Launch the training stages (pretrain, sft, rm, dpo, ppo) with `accelerate launch --config_file` this."""

    def __post_init__(self) -> None:
        check_exists("recipe", self.recipe)
        check_exists("accelerate_config", self.accelerate_config)


TRAINING_STAGES = {"pretrain", "sft", "rm", "dpo", "ppo"}


def planned_stages(config: PipelineConfig) -> tuple[dict, list[str]]:
    """The resolved recipe (run_dir substituted) and the stages to run."""
    recipe = read_recipe(config.recipe)
    listed = config.stages or (recipe.get("pipeline") or {}).get("stages")
    if not listed:
        raise ConfigError(f"stages: {config.recipe} has no `pipeline: {{stages: [...]}}` section")
    run_dir = config.run_dir or recipe.get("run_dir")
    if run_dir is None:
        raise ConfigError("run_dir: required (in the recipe or as --run_dir)")
    recipe = substitute(dict(recipe, run_dir=str(run_dir)), str(run_dir))
    stages = [str(s) for s in listed]
    for stage in stages:
        section = stage_parts(stage)[1]
        if section not in recipe:
            raise ConfigError(f"pipeline.stages: {stage!r} has no '{section}' section")
    if config.only:
        unknown = [s for s in config.only if s not in stages]
        if unknown:
            raise ConfigError(
                f"only: {unknown[0]!r} is not a stage of the recipe; allowed: {', '.join(stages)}"
            )
        stages = [s for s in stages if s in config.only]
    return recipe, stages


def run_pipeline(config: PipelineConfig) -> Path:
    """Run the recipe's stages; returns the run directory."""
    recipe, stages = planned_stages(config)
    run_dir = Path(recipe["run_dir"])
    markers = run_dir / ".pipeline"
    markers.mkdir(parents=True, exist_ok=True)
    resolved = markers / "recipe.yaml"
    resolved.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    earlier_ran = False
    for number, stage in enumerate(stages, 1):
        marker = markers / (stage_parts(stage)[1] + ".done")
        digest = section_digest(recipe, stage)
        reason = rerun_reason(marker, digest, config.force, earlier_ran)
        if reason is None:
            log.info("[%d/%d] %s: done earlier, skipped (--force to redo)", number, len(stages), stage)
            continue
        command = stage_command(stage, resolved, config.accelerate_config)
        log.info("[%d/%d] %s (%s): %s", number, len(stages), stage, reason, " ".join(command))
        if marker.exists():
            discard_checkpoints(recipe, stage)
            marker.unlink()  # until it finishes again; interrupted, the next run resumes it
        started = time.time()
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise InputError(
                f"stage '{stage}' failed with exit status {result.returncode}; fix it and re-run"
            )
        marker.write_text(json.dumps({"seconds": round(time.time() - started, 1), "config": digest}))
        earlier_ran = True
        log.info("[%d/%d] %s: finished in %.1f s", number, len(stages), stage, time.time() - started)
    log.info("pipeline finished: %s", run_dir)
    return run_dir


def discard_checkpoints(recipe: dict, stage: str) -> None:
    """Remove a finished training stage's checkpoints before it runs again from the start."""
    path, section = stage_parts(stage)
    if path[0] not in TRAINING_STAGES:
        return
    output_dir = recipe[section].get("output_dir")
    checkpoints = Path(output_dir) / CHECKPOINTS_DIR if output_dir else None
    if checkpoints is not None and checkpoints.is_dir():
        log.info("%s: starting over; removing the earlier run's checkpoints in %s", stage, checkpoints)
        shutil.rmtree(checkpoints)


def section_digest(recipe: dict, stage: str) -> str:
    """A short hash of a stage's resolved config section."""
    section = json.dumps(recipe[stage_parts(stage)[1]], sort_keys=True, default=str)
    return hashlib.sha256(section.encode()).hexdigest()[:16]


def rerun_reason(marker: Path, digest: str, force: bool, earlier_ran: bool) -> str | None:
    """Why a stage must run (None: it finished with this config and its inputs are unchanged)."""
    if force:
        return "--force"
    if not marker.exists():
        return "not run yet"
    if earlier_ran:
        return "an earlier stage ran again"
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return "unreadable marker"
    # Markers written before digests hold just the seconds taken: nothing to compare, so done.
    if isinstance(recorded, dict) and recorded.get("config") != digest:
        return "its config section changed"
    return None


def stage_command(stage: str, recipe: Path, accelerate_config: Path | None) -> list[str]:
    """The process that runs one stage of a recipe."""
    words, section = stage_parts(stage)
    command = ["-m", "align.cli", *words, "--config", str(recipe), "--section", section]
    if accelerate_config is not None and words[0] in TRAINING_STAGES:
        launcher = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(accelerate_config),
        ]
        return [*launcher, *command]
    return [sys.executable, *command]
