"""The mixture sampler's ledger (no re-draws across phases, counts per mixture) and the packing."""

import json
from collections import Counter

import pytest
import torch

from align.errors import InputError
from align.pretrain.config import SourceConfig
from align.pretrain.mixture import Ledger, MixtureSampler, SourceExhausted, load_source
from align.pretrain.packing import document_positions, pack_batch


def sources_of(corpus):
    return {
        "en": load_source(SourceConfig("en", corpus, lang=["en"])),
        "zh": load_source(SourceConfig("zh", corpus, lang=["zh"])),
        "other": load_source(SourceConfig("other", corpus, exclude_lang=["en", "zh"])),
    }


def test_two_phase_ledger_has_no_duplicate_ids_and_counts_follow_each_mixture(pretrain_corpus):
    sources = sources_of(pretrain_corpus)
    source_of = {doc.id: name for name, docs in sources.items() for doc in docs}
    sampler = MixtureSampler(sources, Ledger(), seed=0)
    drawn = []
    phases = [({"en": 0.6, "zh": 0.3, "other": 0.1}, 250), ({"en": 0.2, "zh": 0.3, "other": 0.5}, 230)]
    for phase, (mixture, n) in enumerate(phases):
        sampler.start_phase(mixture, "stop", phase)
        ids = [sampler.draw().id for _ in range(n)]
        by_source = Counter(source_of[i] for i in ids)
        for name, weight in mixture.items():
            assert abs(by_source[name] - weight * n) <= 1, (phase, name, by_source)
        drawn += ids
    assert len(drawn) == len(set(drawn)) == 480


def test_sampler_resumed_from_a_saved_ledger_draws_the_same_documents(pretrain_corpus):
    sources = sources_of(pretrain_corpus)
    first = MixtureSampler(sources, Ledger(), seed=3)
    first.start_phase({"en": 1, "zh": 1}, "stop", 0)
    [first.draw() for _ in range(17)]
    saved = first.ledger.to_json()
    expected = [first.draw().id for _ in range(40)]
    again = MixtureSampler(sources, Ledger.from_json(saved), seed=3)
    again.start_phase({"en": 1, "zh": 1}, "stop", 0)
    assert [again.draw().id for _ in range(40)] == expected


def test_exhausted_source_stops_the_phase_or_starts_a_logged_new_epoch(pretrain_corpus):
    sources = sources_of(pretrain_corpus)
    stopping = MixtureSampler(sources, Ledger(), seed=0)
    stopping.start_phase({"other": 1.0}, "stop", 0)
    [stopping.draw() for _ in range(300)]
    with pytest.raises(SourceExhausted):
        stopping.draw()
    assert "source 'other' exhausted after 300 documents (epoch 0): phase stopped" in stopping.ledger.events
    renewing = MixtureSampler(sources, Ledger(), seed=0)
    renewing.start_phase({"other": 1.0}, "new_epoch", 0)
    first_epoch = [renewing.draw().id for _ in range(300)]
    second_epoch = [renewing.draw().id for _ in range(300)]
    assert sorted(first_epoch) == sorted(second_epoch) and first_epoch != second_epoch
    assert renewing.ledger.epochs["other"] == 1 and "epoch 1 started" in renewing.ledger.events[0]


def test_packed_batches_are_all_real_tokens_with_eos_between_documents(pretrain_corpus):
    sampler = MixtureSampler(sources_of(pretrain_corpus), Ledger(), seed=0)
    sampler.start_phase({"en": 1.0}, "stop", 0)
    texts = {d.id: d.text for d in sampler.sources["en"]}
    eos = 0
    tokenize = lambda text: [ord(c) + 1 for c in text]  # noqa: E731 - a reversible toy tokenizer
    first = pack_batch(sampler, tokenize, eos, rows=3, seq_len=50)
    second = pack_batch(sampler, tokenize, eos, rows=3, seq_len=50)
    assert first.input_ids.shape == (3, 50)
    stream = torch.cat([first.input_ids.flatten(), second.input_ids.flatten()]).tolist()
    expected = []
    for doc_id in first.ids + second.ids:
        expected += tokenize(texts[doc_id]) + [eos]
    assert stream == expected[: len(stream)]  # nothing dropped, nothing padded, EOS separators
    assert not set(first.ids) & set(second.ids[1:])


def test_document_positions_restart_after_each_eos():
    ids = torch.tensor([[5, 6, 0, 7, 8, 9, 0, 4]])
    assert document_positions(ids, eos_id=0).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0]]


def test_a_row_without_text_names_the_file_and_line(tmp_path):
    shard = tmp_path / "bad.jsonl"
    shard.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.jsonl:2"):
        load_source(SourceConfig("s", shard))


@pytest.mark.slow
def test_a_real_two_phase_run_trains_each_document_once_in_each_phases_proportions(pretrain_baseline):
    root = pretrain_baseline / "checkpoints"
    ledger = json.loads((root / (root / "latest").read_text().strip() / "ledger.json").read_text())
    assert len(ledger["consumed"]) == len(set(ledger["consumed"])) > 0
    mixtures = [
        {"en": 0.6, "zh": 0.3, "other": 0.1},
        {"en": 0.2, "zh": 0.3, "other": 0.5},
    ]  # pretrain_recipe's
    assert len(ledger["phase_counts"]) == 2
    for counts, mixture in zip(ledger["phase_counts"], mixtures, strict=True):
        drawn = sum(counts.values())
        assert all(abs(counts.get(name, 0) - weight * drawn) <= 1 for name, weight in mixture.items()), counts
