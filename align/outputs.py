"""Where a stage may write: never onto, into or around its own inputs, never over a file, and a
whole directory is replaced only when this stage wrote it before (its marker) or `overwrite` says so.

Checked at the door, in the stage's config (so `--check_config` refuses it too, exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from align.errors import ConfigError

MARKER = ".align-output.json"
"""Written into an output directory a stage replaces as a whole: `{"stage": ...}`."""


def check_output_path(
    key: str, output: Path, inputs: Iterable[Path | None], replaces_output: bool = False
) -> None:
    """`output` must not be an existing file or an input. A stage that replaces its output folder
    whole or reads its input folders recursively (`replaces_output`) also may not write around an
    input, nor inside an input folder (a rerun would read its own output)."""
    resolved = Path(output).resolve()
    if resolved.is_file():
        raise ConfigError(f"{key}: {output} is an existing file; give a directory path")
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if resolved == source or (replaces_output and resolved in source.parents):
            raise ConfigError(f"{key}: {output} holds the input {given}; write somewhere else")
        if replaces_output and source in resolved.parents and source.is_dir():
            raise ConfigError(
                f"{key}: {output} lies inside the input directory {given}; write somewhere else"
            )


def check_replaceable(key: str, output: Path, stage: str, overwrite: bool) -> None:
    """A directory the stage will replace whole must be empty, absent, a previous output of this
    stage (its marker), or `overwrite` must be set."""
    output = Path(output)
    if overwrite or not output.is_dir() or not any(output.iterdir()):
        return
    try:
        if json.loads((output / MARKER).read_text(encoding="utf-8")).get("stage") == stage:
            return
    except (OSError, ValueError, AttributeError):
        pass
    raise ConfigError(
        f"{key}: {output} already holds files that `align {stage}` did not write; choose another "
        "output_dir, or pass --overwrite true to replace it"
    )


def write_marker(directory: Path, stage: str) -> None:
    """Mark `directory` as `stage`'s output (it may replace it next time)."""
    (Path(directory) / MARKER).write_text(json.dumps({"stage": stage}), encoding="utf-8")
