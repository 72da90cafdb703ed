"""The `align` command: one subcommand per stage, each configured by a typed dataclass.

Every command takes `--config recipe.yaml` plus `--<field> VALUE` overrides of any config field
(TRL style). Stage modules are imported only when their command runs, so `align --help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import logging
import sys
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from align.config import _type_name, field_docs, is_multi_stage, load_config, read_recipe, to_dict
from align.errors import ConfigError, InputError


@dataclass(frozen=True)
class Command:
    """One `align` subcommand: its config class and the function that runs it, as import paths."""

    name: str
    summary: str
    config: str = ""
    """`module:Class` of the config dataclass (empty for a group without an action of its own)."""
    run: str = ""
    """`module:function` taking the config and doing the work."""
    positional: tuple[str, ...] = ()
    """Config fields also accepted as positional arguments (e.g. `align serve CHECKPOINT`)."""
    children: tuple[Command, ...] = field(default=())


COMMANDS: tuple[Command, ...] = (
    Command(
        "corpus",
        "clean raw text: language id, rule filters, quality filter, dedup",
        "align.corpus.config:CorpusConfig",
        "align.corpus.pipeline:run_corpus",
        children=(
            Command(
                "train-quality",
                "train the model-based quality scorer on gold vs ordinary text",
                "align.corpus.config:QualityTrainConfig",
                "align.corpus.quality:train_quality",
            ),
        ),
    ),
    Command(
        "tokenizer",
        "train the byte-level BPE vocabulary on cleaned shards",
        "align.corpus.config:TokenizerConfig",
        "align.corpus.tokenizer:run_tokenizer",
    ),
    Command(
        "import-base",
        "import a pretrained base shipped as GGUF (e.g. SmolLM2-135M) into an HF directory",
        "align.models:ImportBaseConfig",
        "align.models:import_base",
    ),
    Command(
        "pretrain",
        "multi-phase progressive pretraining with packing, checkpoints and spike recovery",
        "align.pretrain.config:PretrainConfig",
        "align.pretrain.loop:run_pretrain",
    ),
    Command(
        "sft",
        "supervised fine-tuning on multi-turn conversations (TRL SFTTrainer)",
        "align.sft_config:SFTStageConfig",
        "align.sft:run_sft",
    ),
    Command(
        "self-instruct",
        "grow an instruction set from seed tasks with a model served by vLLM",
        "align.self_instruct:SelfInstructConfig",
        "align.self_instruct:run_self_instruct",
    ),
    Command(
        "rm",
        "train the reward model from the SFT checkpoint (TRL RewardTrainer)",
        "rewards.reward_config:RewardStageConfig",
        "rewards.train:run_reward_training",
    ),
    Command(
        "dpo",
        "offline preference optimisation on exported labels: DPO and its losses, KTO, ORPO, SimPO (TRL)",
        "align.dpo_config:DPOStageConfig",
        "align.dpo:run_dpo",
    ),
    Command(
        "ppo",
        "PPO (or GRPO/RLOO/REINFORCE++) against the reward model, rollouts on vLLM",
        "align.ppo.config:PPOConfig",
        "align.ppo.loop:run_ppo",
    ),
    Command(
        "serve",
        "serve a checkpoint over vLLM's OpenAI-compatible API on 127.0.0.1",
        "align.serve:ServeConfig",
        "align.serve:run_serve",
        positional=("checkpoint",),
    ),
    Command(
        "label",
        "the preference store and the Gradio labelling app",
        children=(
            Command(
                "add",
                "import prompts/responses, or generate candidates",
                "rewards.label_config:LabelAddConfig",
                "rewards.store_io:add_to_store",
            ),
            Command(
                "judge",
                "label comparisons with the programmatic judge",
                "rewards.label_config:LabelJudgeConfig",
                "rewards.judge:judge_store",
            ),
            Command(
                "serve",
                "run the labelling app (login required)",
                "rewards.label_config:LabelServeConfig",
                "rewards.app:serve_app",
            ),
            Command(
                "stats",
                "inter-annotator agreement (Cohen's kappa, Krippendorff's alpha)",
                "rewards.label_config:LabelStatsConfig",
                "rewards.agreement:print_stats",
            ),
            Command(
                "export",
                "write TRL-format preference data for `align rm`",
                "rewards.label_config:LabelExportConfig",
                "rewards.store_io:export_preferences",
            ),
        ),
    ),
    Command(
        "eval",
        "discriminative and generative benchmarks (lm-evaluation-harness)",
        "align.eval.config:EvalConfig",
        "align.eval.run:run_eval",
        children=(
            Command(
                "report",
                "render Markdown/LaTeX tables and plots from saved results",
                "align.eval.config:ReportConfig",
                "align.eval.report:render_report",
            ),
        ),
    ),
    Command(
        "pipeline",
        "run the stages of a multi-stage recipe in order (the demo)",
        "align.pipeline:PipelineConfig",
        "align.pipeline:run_pipeline",
    ),
    Command(
        "loop",
        "rounds of policy samples -> labels (judge or people) -> RM -> PPO/DPO, with a per-round table",
        "align.loop_config:LoopConfig",
        "align.loop:run_loop",
    ),
)


def resolve(path: str) -> Any:
    """Import `module:attribute`."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def section_name(path: list[str]) -> str:
    """The recipe section of a command: its path joined by '-' (`label export` -> `label-export`)."""
    return "-".join(path)


def stage_parts(stage: str) -> tuple[list[str], str]:
    """A pipeline stage's command path and recipe section: `label export` -> (["label", "export"],
    "label-export"); a named run of a command, `ppo@rlhf` -> (["ppo"], "ppo@rlhf")."""
    command, _, name = stage.partition("@")
    path = command.split()
    return path, section_name(path) + (f"@{name.strip()}" if name.strip() else "")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _add_config_options(parser: argparse.ArgumentParser, command: Command) -> None:
    cls = resolve(command.config)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    parser.add_argument(
        "--config",
        metavar="RECIPE.yaml",
        help="recipe file: this command's fields, or a multi-stage recipe with a section for it",
    )
    if "run_dir" not in {f.name for f in dataclasses.fields(cls)}:
        parser.add_argument(
            "--run_dir", metavar="DIR", help="replaces the recipe's run_dir in its ${run_dir} substitutions"
        )
        parser.add_argument(
            "--section",
            metavar="NAME",
            help="the multi-stage recipe's section to read (default: the command's own, e.g. `ppo`); "
            "a second run of one command has its own, e.g. `ppo@rlhf`",
        )
    parser.add_argument(
        "--check_config",
        action="store_true",
        help="load and validate the config, print it as YAML, and exit without running",
    )
    for name in command.positional:
        parser.add_argument(f"_{name}", nargs="?", metavar=name.upper(), help=docs.get(name, ""))
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        kind = _type_name(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        flag = {"nargs": "?", "const": "true"} if hints[f.name] is bool else {}
        parser.add_argument(
            f"--{f.name}",
            metavar="VALUE",
            default=argparse.SUPPRESS,
            **flag,
            help=f"{docs.get(f.name, '')} [{kind}; {'required' if required else f'default: {default!r}'}]",
        )


def _usage(path: list[str], commands: tuple[Command, ...], summary: str) -> str:
    prog = " ".join(["align", *path])
    lines = [
        f"usage: {prog} COMMAND [--config RECIPE.yaml] [--FIELD VALUE ...]",
        "",
        summary,
        "",
        "commands:",
    ]
    lines += [f"  {c.name:<15}{c.summary}" for c in commands]
    lines += ["", f"Run `{prog} COMMAND --help` for a command's options."]
    return "\n".join(lines)


def build_parser(command: Command, path: list[str]) -> argparse.ArgumentParser:
    """The argument parser of one command; imports only that command's (light) config module."""
    parser = argparse.ArgumentParser(
        prog=" ".join(["align", *path]),
        description=command.summary
        + (
            "\n\nsubcommands:\n" + "\n".join(f"  {c.name:<15}{c.summary}" for c in command.children)
            if command.children
            else ""
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _add_config_options(parser, command)
    return parser


def load_command_config(
    path: list[str],
    config_path: str | None,
    overrides: dict[str, Any],
    run_dir: str | None = None,
    section: str | None = None,
) -> Any:
    """The validated config of the command at `path`, from a recipe file (its `section`, by default
    the command's own) and overrides."""
    cls = resolve(find_command(path).config)
    if config_path is not None and "recipe" in {f.name for f in dataclasses.fields(cls)}:
        # A command that reads a whole recipe (the pipeline) is given the --config file itself.
        overrides = {"recipe": config_path, **overrides}
    if run_dir is not None and "run_dir" in {f.name for f in dataclasses.fields(cls)}:
        # A command with its own run_dir field (the pipeline) takes --run_dir as that field too.
        overrides = {"run_dir": run_dir, **overrides}
    if config_path is not None:
        check_recipe_sections(read_recipe(config_path))
    return load_config(cls, config_path, overrides, section=section or section_name(path), run_dir=run_dir)


RECIPE_KEYS = ("run_dir", "pipeline", "extends")
"""The top-level keys of a multi-stage recipe that are not a command's section."""


def command_sections(commands: tuple[Command, ...] = COMMANDS, prefix: tuple[str, ...] = ()) -> list[str]:
    """The recipe section name of every command that has a config."""
    names = []
    for command in commands:
        path = (*prefix, command.name)
        if command.config:
            names.append(section_name(list(path)))
        names += command_sections(command.children, path)
    return names


def check_recipe_sections(recipe: dict[str, Any]) -> None:
    """A multi-stage recipe's sections must each name a command (`ppo@rlhf`: a named run of
    `ppo`): a misspelled section would otherwise be ignored, and its stage run on defaults."""
    if not is_multi_stage(recipe):
        return
    known = command_sections()
    for key in recipe:
        if key in RECIPE_KEYS or str(key).partition("@")[0] in known:
            continue
        close = difflib.get_close_matches(str(key).partition("@")[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; sections are commands: {', '.join(known)}"
        raise ConfigError(f"{key}: unknown recipe section{hint}")


def parse_command_line(argv: list[str]) -> tuple[list[str], Any, argparse.Namespace]:
    """Parse `COMMAND ... [--config R] [--FIELD V ...]` into its path, validated config and options."""
    path, rest = split_command(argv)
    command = find_command(path)
    args, unknown = build_parser(command, path).parse_known_args(rest)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown option; see align {' '.join(path)} --help")
    reserved = ("config", "log_level", "run_dir", "section", "check_config")
    overrides = {k.lstrip("_"): v for k, v in vars(args).items() if k not in reserved and v is not None}
    run_dir, section = getattr(args, "run_dir", None), getattr(args, "section", None)
    return path, load_command_config(path, args.config, overrides, run_dir, section), args


def find_command(path: list[str], allow_group: bool = False) -> Command:
    """The `Command` at `path` (e.g. ["label", "export"])."""
    commands, found = COMMANDS, None
    for name in path:
        found = next((c for c in commands if c.name == name), None)
        if found is None:
            raise ConfigError(f"command: unknown command {' '.join(path)!r}")
        commands = found.children
    if found is None or not (found.config or allow_group):
        raise ConfigError(f"command: {' '.join(path)!r} needs a subcommand")
    return found


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split argv into the command path (leading words naming commands) and the rest."""
    path: list[str] = []
    commands = COMMANDS
    for word in argv:
        found = next((c for c in commands if c.name == word), None)
        if found is None:
            break
        path.append(word)
        commands = found.children
    return path, argv[len(path) :]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path, rest = split_command(argv)
    if not path:
        print(_usage([], COMMANDS, "An RLHF suite on a pretrained base, after the InternLM report."))
        wants_help = bool(rest) and rest[0] in ("-h", "--help")
        if rest and not wants_help:
            print(f"\nalign: error: {rest[0]}: unknown command", file=sys.stderr)
        return 0 if wants_help else 2
    command = find_command(path, allow_group=True)
    prog = " ".join(["align", *path])
    if not command.config:
        print(_usage(path, command.children, command.summary))
        return 0 if rest and rest[0] in ("-h", "--help") else 2
    try:
        path, config, args = parse_command_line(argv)
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        if args.check_config:
            print(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), end="")
            return 0
        resolve(command.run)(config)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except (PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError) as err:
        # The file system refused a write or a read (a read-only folder, a file where a folder
        # should be): the user's to fix, so one line as for bad input.
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
