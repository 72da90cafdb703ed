"""Reading raw documents: JSONL (optionally gzipped), Parquet, or plain text files.

Bad input never crashes a run half-way: a line that is not UTF-8, not JSON, has no `text`, or is
longer than the limit becomes a `Rejected` record (file, line, reason) that the corpus stage
counts and samples; only a file that cannot be read at all raises `InputError`.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from align.errors import InputError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".txt")


@dataclass
class RawDocument:
    id: str
    text: str
    source: str


@dataclass
class Rejected:
    where: str
    """`file:line` (or `file:row`)."""
    reason: str
    head: str
    """The first characters of the offending input, for the dropped-documents sample."""


def input_files(paths: Iterable[Path]) -> list[Path]:
    """The supported files under the given files/directories, in a stable (sorted) order."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        elif path.name.endswith(SUFFIXES):
            found.append(path)
        else:
            raise InputError(f"{path}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
    return found


def read_documents(path: Path, max_chars: int, head_chars: int = 300) -> Iterator[RawDocument | Rejected]:
    """The documents of one file, with a `Rejected` record in place of each unusable one."""
    if path.stat().st_size == 0:
        log.warning("%s: empty file", path)
        return
    if path.name.endswith(".parquet"):
        yield from _read_parquet(path, max_chars, head_chars)
    elif path.name.endswith(".txt"):
        yield _parse_text(path, path.read_bytes(), 1, path.stem, max_chars, head_chars, as_json=False)
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    yield _parse_text(
                        path, line, line_no, f"{path.stem}:{line_no}", max_chars, head_chars, True
                    )


def _parse_text(
    path: Path, raw: bytes, line_no: int, default_id: str, max_chars: int, head_chars: int, as_json: bool
) -> RawDocument | Rejected:
    where = f"{path}:{line_no}"
    head = raw[: head_chars * 4].decode("utf-8", errors="replace")[:head_chars]
    # A UTF-8 character is at most 4 bytes: longer input cannot fit max_chars; skip it unparsed.
    if len(raw) > 4 * max_chars:
        return Rejected(where, f"too long ({len(raw):,} bytes > 4 x max_chars)", head)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected(where, f"not UTF-8 (byte {err.start})", head)
    source, doc_id = path.name.split(".")[0], default_id
    if as_json:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            return Rejected(where, f"invalid JSON ({err.msg})", head)
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return Rejected(where, "missing text field", head)
        text = record["text"]
        doc_id = str(record.get("id", doc_id))
        source = str(record.get("source", source))
    if not text.strip():
        return Rejected(where, "empty text", head)
    return RawDocument(doc_id, text, source)


def _read_parquet(path: Path, max_chars: int, head_chars: int) -> Iterator[RawDocument | Rejected]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    if "text" not in table.schema_arrow.names:
        raise InputError(f"{path}: no `text` column (columns: {', '.join(table.schema_arrow.names)})")
    row = 0
    for batch in table.iter_batches():
        for record in batch.to_pylist():
            row += 1
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                yield Rejected(f"{path}:row {row}", "missing text field", "")
            elif len(text) > max_chars:
                yield Rejected(f"{path}:row {row}", f"too long ({len(text):,} chars)", text[:head_chars])
            else:
                yield RawDocument(
                    str(record.get("id", f"{path.stem}:{row}")), text, str(record.get("source", path.stem))
                )


def iter_texts(paths: Iterable[Path], max_chars: int = 1_000_000, limit: int | None = None) -> Iterator[str]:
    """Just the texts of the usable documents under `paths` (training the scorer or the tokenizer)."""
    count = 0
    for path in input_files(paths):
        for doc in read_documents(path, max_chars):
            if isinstance(doc, RawDocument):
                yield doc.text
                count += 1
                if limit is not None and count >= limit:
                    return
