"""The datatrove pipeline steps every corpus stage is built from.

A `RecordingStep` makes each decision visible: it counts documents and characters in and out per
(language, source), and writes every dropped document (reason, id, the first characters) to
`dropped/<stage>-<rank>.jsonl`. Counts land in `counts/<stage>-<rank>.json` once the step has seen
its whole shard, so a task that dies leaves no counts and the run is never finalized.
"""

from __future__ import annotations

import json
import os
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from align.corpus.documents import RawDocument, input_files, read_documents


def write_json_atomic(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class RecordingStep(PipelineStep):
    """A step that records its decisions; subclasses implement `documents`."""

    stage = "step"
    type = "🔻 - FILTER"

    def __init__(self, work_dir: str, head_chars: int = 300):
        super().__init__()
        self.work_dir = work_dir
        self.head_chars = head_chars
        self._counts: dict[str, list[int]] = {}
        self._reasons: dict[str, int] = {}
        self._dropped = None

    @property
    def name(self) -> str:
        return self.stage

    def count(self, doc: Document, index: int) -> None:
        key = f"{doc.metadata.get('lang', '?')}\t{doc.metadata.get('source', '?')}"
        row = self._counts.setdefault(key, [0, 0, 0, 0])
        row[index] += 1
        row[index + 1] += len(doc.text)

    def drop(self, rank: int, reason: str, doc_id: str, metadata: dict, head: str) -> None:
        category = reason.split(" (")[0]
        self._reasons[category] = self._reasons.get(category, 0) + 1
        self.stat_update(f"dropped_{category}")
        if self._dropped is None:
            path = Path(self.work_dir) / "final" / "dropped" / f"{self.stage}-{rank:05d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dropped = path.open("w", encoding="utf-8")
        record = {
            "stage": self.stage,
            "reason": reason,
            "id": doc_id,
            **metadata,
            "text": head[: self.head_chars],
        }
        self._dropped.write(json.dumps(record, ensure_ascii=False) + "\n")

    @abstractmethod
    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> Iterator[Document]:
        """The documents this step passes on; it calls `count` and `drop` for what it sees."""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.track_time():
            yield from self.documents(data, rank, world_size)
        if self._dropped is not None:
            self._dropped.close()
        rows = [[*key.split("\t"), *values] for key, values in sorted(self._counts.items())]
        write_json_atomic(
            Path(self.work_dir) / "counts" / f"{self.stage}-{rank:05d}.json",
            {"stage": self.stage, "rows": rows, "reasons": self._reasons},
        )


class FilterStep(RecordingStep):
    """A step that decides document by document; subclasses implement `decide`."""

    @abstractmethod
    def decide(self, doc: Document) -> str | None:
        """None to keep the document (possibly edited in place), or the reason to drop it."""

    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> Iterator[Document]:
        for doc in data:
            self.count(doc, 0)
            reason = self.decide(doc)
            if reason is None:
                self.count(doc, 2)
                yield doc
            else:
                self.drop(rank, reason, doc.id, _public(doc.metadata), doc.text)


def _public(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if not k.startswith("_")}


class ReadInputs(RecordingStep):
    """Reads this task's share of the input files (file i goes to task i mod tasks)."""

    stage = "read"
    type = "📖 - READER"

    def __init__(self, work_dir: str, inputs: list[str], max_chars: int, head_chars: int = 300):
        super().__init__(work_dir, head_chars)
        self.inputs = inputs
        self.max_chars = max_chars

    def documents(self, data: DocumentsPipeline, rank: int, world_size: int) -> Iterator[Document]:
        files = input_files(Path(p) for p in self.inputs)[rank::world_size]
        for path in files:
            for raw in read_documents(path, self.max_chars, self.head_chars):
                if isinstance(raw, RawDocument):
                    doc = Document(text=raw.text, id=raw.id, metadata={"source": raw.source})
                    self.count(doc, 0)
                    self.count(doc, 2)
                    yield doc
                else:
                    self._counts.setdefault(f"?\t{path.name.split('.')[0]}", [0, 0, 0, 0])[0] += 1
                    self.drop(rank, raw.reason, raw.where, {"source": path.name}, raw.head)


class WriteShard(PipelineStep):
    """Writes the documents of a task to `<folder>/<rank>.jsonl` (temp name, renamed when complete)."""

    name = "write"
    type = "💽 - WRITER"

    def __init__(self, folder: str, flat: bool = False):
        super().__init__()
        self.folder = folder
        self.flat = flat

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for doc in data:
                metadata = _public(doc.metadata)
                record = (
                    {"id": doc.id, "text": doc.text, **metadata}
                    if self.flat
                    else {"id": doc.id, "text": doc.text, "metadata": metadata}
                )
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.stat_update("written")
                yield doc
        os.replace(tmp, path)


class ReadShards(PipelineStep):
    """Reads every shard a previous stage wrote, in rank order (a global stage runs as one task)."""

    name = "read shards"
    type = "📖 - READER"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if world_size != 1:
            raise ValueError("a global corpus stage (dedup) must run as a single task")
        for path in sorted(Path(self.folder).glob("*.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    yield Document(text=record["text"], id=record["id"], metadata=record["metadata"])
