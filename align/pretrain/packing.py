"""Packing: documents joined by EOS into fixed-length sequences, with no padding at all.

Tokens left over after a batch stay in the ledger's `carry` and open the next batch, so no token
is dropped and a resumed run packs exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from align.pretrain.mixture import Ledger, MixtureSampler


@dataclass
class PackedBatch:
    input_ids: torch.Tensor
    """[rows, seq_len] token ids; every one a real token (documents and EOS separators)."""
    position_ids: torch.Tensor | None
    """Positions restarting after each EOS (document-aware attention), or None."""
    ids: list[str]
    """Documents drawn to fill this batch."""


def document_positions(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Position ids that restart at 0 after every EOS, row by row."""
    rows, length = input_ids.shape
    positions = torch.arange(length).expand(rows, length)
    after_eos = torch.zeros_like(input_ids, dtype=torch.bool)
    after_eos[:, 1:] = input_ids[:, :-1] == eos_id
    # The start of each token's document: the latest index (so far in the row) that follows an EOS.
    starts = torch.where(after_eos, positions, torch.zeros_like(positions)).cummax(dim=1).values
    return positions - starts


def pack_batch(
    sampler: MixtureSampler,
    tokenize: Callable[[str], list[int]],
    eos_id: int,
    rows: int,
    seq_len: int,
    document_attention: bool = False,
) -> PackedBatch:
    """Draw documents until `rows` x `seq_len` tokens are ready; raises SourceExhausted like the sampler."""
    ledger: Ledger = sampler.ledger
    need = rows * seq_len
    while len(ledger.carry) < need:
        doc = sampler.draw()
        ledger.carry.extend(tokenize(doc.text))
        ledger.carry.append(eos_id)
        ledger.pending.append(doc.id)
    input_ids = torch.tensor(ledger.carry[:need], dtype=torch.long).view(rows, seq_len)
    del ledger.carry[:need]
    ids, ledger.pending = ledger.pending, []
    positions = document_positions(input_ids, eos_id) if document_attention else None
    return PackedBatch(input_ids, positions, ids)
