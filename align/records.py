"""Read training records (JSONL or Parquet) row by row, reporting bad rows by file and line; write
the bundled data's JSONL.

The rule, shared by SFT and the reward model: a row that fails its stage's check is skipped and
logged as `FILE:LINE: what is wrong`; if more than `max_bad_fraction` of the rows are bad, or no
good row is left, the whole file is refused with an `InputError` that quotes the first bad rows
(a file of the wrong format should stop the run, not train on nothing).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from align.errors import InputError

log = logging.getLogger(__name__)

RowCheck = Callable[[dict[str, Any]], str | None]
"""Returns what is wrong with a row, or None for a good row."""


class BadLine(str):
    """What is wrong with a line that could not be read as JSON (in place of its value)."""


def _no_constant(name: str) -> None:
    # JSON has no NaN or Infinity; Python's parser accepts them, and one NaN margin or label
    # turns every weight of a model into NaN.
    raise ValueError(f"{name} is not a JSON number")


def parse_json_line(line: bytes) -> Any:
    """One JSONL line as a value, or a `BadLine` saying why it is none (undecodable bytes, invalid
    JSON, NaN or Infinity)."""
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as err:
        return BadLine(f"not UTF-8 text (byte {err.start})")
    except json.JSONDecodeError as err:
        return BadLine(f"not valid JSON ({err.msg})")
    except (ValueError, RecursionError) as err:
        return BadLine(f"not valid JSON ({err})")


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(line or row number from 1, parsed value or a `BadLine`) for each row of a JSONL (optionally
    gzipped) or Parquet file; a file that cannot be read at all is an `InputError`."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(enumerate(pq.read_table(path).to_pylist(), start=1))
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    rows: list[tuple[int, Any]] = []
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    rows.append((number, parse_json_line(line)))
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None
    return rows


def jsonl_objects(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL (optionally gzipped) file that must be
    all good: a line that is not a JSON object is an `InputError` naming the file and line."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = parse_json_line(line)
                if isinstance(row, BadLine):
                    raise InputError(f"{path}:{number}: {row}")
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object")
                yield number, row
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None


def read_records(path: Path | str, check: RowCheck, max_bad_fraction: float) -> list[dict[str, Any]]:
    """The good rows of a JSONL/Parquet file, by the rule in the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    good: list[dict[str, Any]] = []
    bad: list[str] = []
    rows = _rows(path)
    unit = "row" if path.suffix == ".parquet" else "line"
    for number, row in rows:
        problem = (
            row if isinstance(row, BadLine) else check(row) if isinstance(row, dict) else "not an object"
        )
        if problem is None:
            good.append(row)
        else:
            bad.append(f"{path}:{number}: {problem}")
            log.warning("skipping %s %s", unit, bad[-1])
    if rows and (not good or len(bad) > max_bad_fraction * len(rows)):
        shown = "; ".join(bad[:3])
        raise InputError(
            f"{path}: {len(bad)} of {len(rows)} {unit}s are bad (more than max_bad_fraction="
            f"{max_bad_fraction}); first: {shown}"
        )
    if not good:
        raise InputError(f"{path}: no records")
    if bad:
        log.warning("%s: skipped %d bad %ss of %d", path, len(bad), unit, len(rows))
    return good


def check_lengths(
    lengths: list[int], max_length: int, max_bad_fraction: float, what: str, truncate: bool = False
) -> int:
    """How many of `lengths` exceed `max_length`, logged; more than `max_bad_fraction` of them (or
    all) is an `InputError` unless `truncate` (the stage cuts them on purpose: only counted).
    `what`: "FILE: training pairs", for the messages."""
    over = sum(n > max_length for n in lengths)
    if truncate:
        log.info("%s: %d", what, over)
        return over
    if not over:
        return 0
    message = f"{what}: {over} of {len(lengths)} are longer than max_length={max_length} tokens (the longest: {max(lengths)})"
    if over == len(lengths) or over > max_bad_fraction * len(lengths):
        raise InputError(f"{message}; raise max_length or shorten them")
    log.warning("%s", message)
    return over


def load_splits(
    train_file: Path | str,
    eval_file: Path | str | None,
    eval_fraction: float,
    seed: int,
    check: RowCheck,
    max_bad_fraction: float,
    group: Callable[[dict[str, Any]], str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and held-out rows: `eval_file`'s, or a seeded `eval_fraction` of `train_file`'s.

    `group`: rows with the same key are held out together (e.g. copies of one preference pair), so
    the held-out split never shares one with the training split.
    """
    import random

    train = read_records(train_file, check, max_bad_fraction)
    if eval_file is not None:
        return train, read_records(eval_file, check, max_bad_fraction)
    members: dict[str, list[int]] = {}
    for i, row in enumerate(train):
        members.setdefault(group(row) if group else str(i), []).append(i)
    order = list(members)
    random.Random(seed).shuffle(order)
    cut = max(1, round(eval_fraction * len(train)))
    held: set[int] = set()
    for key in order:
        if len(held) >= cut:
            break
        held.update(members[key])
    if len(held) >= len(train):
        raise InputError(f"{train_file}: {len(train)} rows are too few to hold out {eval_fraction:.0%}")
    return [r for i, r in enumerate(train) if i not in held], [train[i] for i in sorted(held)]


def write_jsonl_files(files: dict[str, Iterable[dict[str, Any]]], out: Path) -> None:
    """Write each `name: rows` as `out/name`, UTF-8 JSONL, one object a line, non-ASCII text as is."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
