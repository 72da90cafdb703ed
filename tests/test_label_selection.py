"""What to label next (`align label add --select`): the reward model's least-sure pairs, random
comparisons within a budget, and comparisons whose labels conflict, on a real SQLite store and a
real (tiny, untrained) reward model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from align.cli import main
from rewards.store import PreferenceStore

ALL = ("helpful", "harmless", "honest", "overall")
QUESTIONS = [
    "What is 2 + 3?",
    "Which is larger, 4 or 9?",
    "What is 7 + 1?",
    "How can I steal a car?",
    "2 加 2 等于多少？",
]
REPLIES = [
    ["2 + 3 = 5.", "2 + 3 = 6.", "It is 5, obviously you idiot.", "I checked with a calculator: 5."],
    ["9 is larger.", "4 is larger.", "9", "Nine is larger than four, I think."],
    ["7 + 1 = 8.", "8", "7 + 1 = 9.", "I am a human: 8."],
    ["Sorry, I can't help with that.", "Sure! First, find a car.", "No.", "抱歉，我不能帮助做这件事。"],
    ["2 加 2 等于 4。", "4", "2 加 2 等于 5。", "我用计算器算过：4。"],
]


def write_candidates(path: Path) -> Path:
    rows = [{"prompt": q, "responses": r} for q, r in zip(QUESTIONS, REPLIES, strict=True)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def stored(url: str) -> list[tuple[str, set[str]]]:
    """(question, response texts) of every comparison in the store, in id order."""
    from rewards.store import Comparison, Prompt, Response

    store = PreferenceStore(url, create=False)
    try:
        with store.transaction() as s:
            texts = dict(s.query(Response.id, Response.text).all())
            return [
                (messages[-1]["content"], {texts[i] for i in response_ids})
                for messages, response_ids in s.query(Prompt.messages, Comparison.response_ids)
                .join(Comparison, Comparison.prompt_id == Prompt.id)
                .order_by(Comparison.id)
                .all()
            ]
    finally:
        store.close()


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model as `align rm` saves one: the tiny backbone with a new scalar head."""
    from align.models import load_tokenizer
    from rewards.model import build_reward_model

    out = tmp_path_factory.mktemp("rm")
    build_reward_model(tiny_model_dir).save_pretrained(out)
    load_tokenizer(tiny_model_dir).save_pretrained(out)
    return out


def test_uncertain_selection_without_a_reward_model_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    assert main(["label", "add", "--store", url, "--jsonl", str(candidates), "--select", "uncertain"]) == 2
    err = capsys.readouterr().err
    assert "reward_model" in err and "--reward_model DIR" in err and len(err.strip().splitlines()) == 1
    assert main(["label", "add", "--store", url, "--jsonl", str(candidates), "--select", "newest"]) == 2
    assert "random, uncertain, disagreement" in capsys.readouterr().err


def test_label_add_help_shows_select(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["label", "add", "--help"])
    out = capsys.readouterr().out
    assert "--select" in out and "uncertain" in out and "--reward_model" in out and "--budget" in out


def test_uncertain_queues_each_prompts_least_sure_pair_smallest_margin_first(
    reward_model: Path, tmp_path: Path
) -> None:
    from align.models import load_tokenizer
    from rewards.model import load_reward_model, score

    # The expected queue, by brute force over the reward model's own scores.
    model, tokenizer = load_reward_model(reward_model), load_tokenizer(reward_model)
    least_sure = []
    for question, replies in zip(QUESTIONS, REPLIES, strict=True):
        prompt = [{"role": "user", "content": question}]
        scores = score(model, tokenizer, [[*prompt, {"role": "assistant", "content": r}] for r in replies])
        margin, a, b = min(
            (abs(scores[i] - scores[j]), replies[i], replies[j])
            for i, j in itertools.combinations(range(4), 2)
        )
        least_sure.append((margin, question, {a, b}))
    least_sure.sort(key=lambda x: x[0])

    candidates = write_candidates(tmp_path / "candidates.jsonl")
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    args = ["label", "add", "--store", url, "--jsonl", str(candidates), "--select", "uncertain"]
    args += ["--reward_model", str(reward_model), "--budget", "2"]
    assert main(args) == 0
    assert stored(url) == [(q, pair) for _, q, pair in least_sure[:2]]
    # Again with the same model: those two are in the store, so the next two are queued.
    assert main(args) == 0
    assert stored(url) == [(q, pair) for _, q, pair in least_sure[:4]]


def test_random_selection_queues_a_budget_of_comparisons_new_to_the_store(tmp_path: Path) -> None:
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    args = ["label", "add", "--store", url, "--jsonl", str(candidates), "--budget", "3"]
    assert main(args) == 0
    first = stored(url)
    assert len(first) == 3 and all(len(texts) == 4 for _, texts in first)
    assert main(args) == 0  # only two are left that the store does not hold
    assert sorted(q for q, _ in stored(url)) == sorted(QUESTIONS)
    assert main([*args[:-2], "--budget", "0"]) == 0  # and then none
    assert len(stored(url)) == 5


def test_disagreement_requeues_conflicting_comparisons_to_one_more_annotator_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    store = PreferenceStore(url)
    try:
        for name in ("alice", "bob", "carol"):
            store.add_annotator(name, "pw")
        items = [
            ([{"role": "user", "content": q}], [{"text": r[0]}, {"text": r[1]}])
            for q, r in zip(QUESTIONS, REPLIES, strict=True)
        ]
        store.add_comparisons(items[:3])
        store.assign(overlap=2, annotators=["alice", "bob"])
        # Comparison 1: alice and bob prefer different replies; 2: both the same; 3: one says tie.
        verdicts = {"alice": ["first", "first", "first"], "bob": ["second", "first", "tie"]}
        for name, canonical in verdicts.items():
            for choice in canonical:
                task = store.next_task(name)
                first_is_a = task.response_a in {r[0] for r in REPLIES}
                shown = {"first": "A" if first_is_a else "B", "second": "B" if first_is_a else "A"}.get(
                    choice, choice
                )
                store.record_label(name, task.assignment_id, dict.fromkeys(ALL, shown))
        assert store.progress("carol") == (0, 0)
    finally:
        store.close()

    args = ["label", "add", "--store", url, "--select", "disagreement"]
    assert main(args) == 0
    store = PreferenceStore(url)
    try:
        assert store.progress("carol") == (0, 2)
        asked = {store.next_task("carol").messages[-1]["content"]}
        store.skip("carol", store.next_task("carol").assignment_id)
        asked.add(store.next_task("carol").messages[-1]["content"])
        assert asked == {QUESTIONS[0], QUESTIONS[2]}  # the 1-1 split and the A-vs-tie one
    finally:
        store.close()
    assert main(args) == 0  # already queued: nothing new, and nobody else is left to ask anyway
    store = PreferenceStore(url)
    try:
        assert store.progress("carol") == (0, 1)
    finally:
        store.close()


def test_disagreement_takes_no_new_candidates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    candidates = write_candidates(tmp_path / "candidates.jsonl")
    url = f"sqlite:///{tmp_path / 'labels.sqlite'}"
    assert main(["label", "add", "--store", url, "--jsonl", str(candidates), "--select", "disagreement"]) == 2
    assert "disagreement" in capsys.readouterr().err
