"""Dry-run an `accelerate launch ... -m align.cli COMMAND ...` command line without starting it.

Parses the line with Accelerate's own parser and config loader, prepares the environment its
launcher would set (DDP, FSDP, DeepSpeed), and loads the `align` command's config, so a GPU or
cluster command can be checked on a laptop: bad accelerate configs and bad recipes fail here.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any


@dataclass
class LaunchPlan:
    """What `accelerate launch` would do."""

    launcher: str
    """`simple`, `multi_gpu` (DDP and FSDP) or `deepspeed`."""
    num_processes: int
    num_machines: int
    env: dict[str, str]
    """Environment variables the launcher would set for each process."""
    command: list[str]
    """The `align` command path (e.g. ["pretrain"])."""
    config: Any
    """The command's loaded and validated config."""


def dry_run_launch(line: str) -> LaunchPlan:
    """Plan an `accelerate launch [options] -m align.cli COMMAND [--config R] [--field V ...]` line."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    from align.cli import parse_command_line

    words = shlex.split(line)
    if words[:2] != ["accelerate", "launch"]:
        raise ValueError(f"not an `accelerate launch` command: {line}")
    args = launch_command_parser().parse_args(words[2:])
    if not (args.module and args.training_script == "align.cli"):
        raise ValueError("the launched program must be `-m align.cli COMMAND ...`")
    args, defaults, _ = _validate_launch_command(args)
    args.main_process_port = args.main_process_port or 29500
    if args.use_deepspeed:
        launcher = "deepspeed"
        # As `accelerate launch` does before calling its DeepSpeed launcher.
        fields = defaults.deepspeed_config.keys() if defaults else []
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        launcher = "multi_gpu"
        env = prepare_multi_gpu_env(args)
    else:
        launcher, env = "simple", {}
    path, config, _ = parse_command_line(list(args.training_script_args))
    return LaunchPlan(
        launcher=launcher,
        num_processes=int(args.num_processes or 1),
        num_machines=int(args.num_machines or 1),
        env={k: str(v) for k, v in env.items()},
        command=path,
        config=config,
    )
