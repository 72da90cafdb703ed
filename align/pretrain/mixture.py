"""Sources, the mixture sampler and its ledger: which documents were drawn, so none is drawn twice.

Each source is shuffled once per epoch (seeded by the run seed, the source name and the epoch) and
read through a cursor. A phase draws from its sources by smooth weighted round-robin: the next
document comes from the source furthest behind its share, so after n draws every source holds its
weight's share of n within one document, with no randomness to replay. Cursors live across phases,
so when a later phase changes the ratios it continues where the earlier one stopped and no consumed
document is drawn again. The ledger (cursors, draws, skipped batches) is saved in every checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from align.errors import InputError
from align.pretrain.config import SourceConfig
from align.records import jsonl_objects

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


@dataclass
class Document:
    id: str
    text: str


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))


def _rows(file: Path):
    """(row number, row) pairs of a JSONL (optionally gzipped) or Parquet file."""
    if file.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(file).to_pylist(), 1)
        return
    yield from jsonl_objects(file)


def load_source(config: SourceConfig) -> list[Document]:
    """The documents of a source, in file order; ids are the rows' `id`, else `file:row`."""
    files = _files(Path(config.path))
    if not files:
        raise InputError(f"{config.path}: no {', '.join(SUFFIXES)} files for source '{config.name}'")
    docs: list[Document] = []
    for file in files:
        for number, row in _rows(file):
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InputError(f"{file}:{number}: expected an object with a string `text` field")
            lang = row.get("lang")
            if config.lang is not None and lang not in config.lang:
                continue
            if config.exclude_lang is not None and lang in config.exclude_lang:
                continue
            if row["text"]:
                docs.append(Document(str(row.get("id", f"{file.name}:{number}")), row["text"]))
    if not docs:
        raise InputError(f"{config.path}: source '{config.name}' has no documents after its lang filters")
    return docs


class SourceExhausted(Exception):
    """A source ran out during a phase whose policy is `stop`."""


@dataclass
class Ledger:
    """Everything about the data stream a checkpoint must hold for an exact resume."""

    cursors: dict[str, int] = field(default_factory=dict)
    """Next position in each source's current epoch order."""
    epochs: dict[str, int] = field(default_factory=dict)
    """Epoch of each source (0 = first pass)."""
    phase_counts: list[dict[str, int]] = field(default_factory=list)
    """Documents drawn per source in each phase so far."""
    consumed: list[str] = field(default_factory=list)
    """Ids of every document drawn into a trained batch, in order."""
    skipped: list[dict] = field(default_factory=list)
    """Batches dropped by spike recovery: {batch, step, ids}."""
    skip_batches: list[int] = field(default_factory=list)
    """Batch numbers to drop when they come up (filled by a rollback)."""
    batches: int = 0
    """Batches drawn so far (trained and skipped)."""
    carry: list[int] = field(default_factory=list)
    """Tokens packed but not yet placed in a sequence."""
    pending: list[str] = field(default_factory=list)
    """Ids drawn whose tokens wait in `carry` for the next batch."""
    events: list[str] = field(default_factory=list)
    """Exhaustion and rollback events, for the record."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        return cls(**json.loads(text))


class MixtureSampler:
    """Draws documents from sources in a phase's proportions, tracking cursors in a `Ledger`."""

    def __init__(self, sources: dict[str, list[Document]], ledger: Ledger, seed: int):
        self.sources = sources
        self.ledger = ledger
        self.seed = seed
        self._orders: dict[tuple[str, int], list[int]] = {}
        for name in sources:
            ledger.cursors.setdefault(name, 0)
            ledger.epochs.setdefault(name, 0)
        self.weights: dict[str, float] = {}
        self.on_exhausted = "new_epoch"

    def start_phase(self, mixture: dict[str, float], on_exhausted: str, phase: int) -> None:
        """Use a phase's mixture; `phase` is its index (the ledger counts draws per phase)."""
        total = sum(mixture.values())
        self.weights = {k: v / total for k, v in mixture.items() if v > 0}
        self.on_exhausted = on_exhausted
        while len(self.ledger.phase_counts) <= phase:
            self.ledger.phase_counts.append({})
        self.counts = self.ledger.phase_counts[phase]

    def _order(self, name: str, epoch: int) -> list[int]:
        key = (name, epoch)
        if key not in self._orders:
            order = list(range(len(self.sources[name])))
            random.Random(f"{self.seed}/{name}/{epoch}").shuffle(order)
            self._orders[key] = order
        return self._orders[key]

    def draw(self) -> Document:
        """The next document of the mixture (smooth weighted round-robin over the sources)."""
        drawn = sum(self.counts.get(n, 0) for n in self.weights) + 1
        name = max(self.weights, key=lambda n: self.weights[n] * drawn - self.counts.get(n, 0))
        cursor, epoch = self.ledger.cursors[name], self.ledger.epochs[name]
        if cursor >= len(self.sources[name]):
            message = f"source '{name}' exhausted after {len(self.sources[name])} documents (epoch {epoch})"
            if self.on_exhausted == "stop":
                self.ledger.events.append(message + ": phase stopped")
                log.warning("%s: stopping the phase (on_exhausted: stop)", message)
                raise SourceExhausted(name)
            self.ledger.events.append(message + f": epoch {epoch + 1} started")
            log.warning("%s: starting epoch %d (on_exhausted: new_epoch)", message, epoch + 1)
            self._orders.pop((name, epoch), None)
            epoch, cursor = epoch + 1, 0
            self.ledger.epochs[name] = epoch
        self.ledger.cursors[name] = cursor + 1
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.sources[name][self._order(name, epoch)[cursor]]
