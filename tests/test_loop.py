"""`align loop`: rounds of samples -> labels -> reward model -> PPO on the tiny model at smoke size,
each round in its own directory with a line in the table, a finished round skipped on a rerun, and
people as the labellers (the loop stops until the app's labels are in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from align.cli import main
from rewards.store import PreferenceStore

REPO = Path(__file__).resolve().parent.parent


def loop_recipe(tmp_path: Path, policy: Path, **fields) -> Path:
    """A smoke-size loop on the instruction task (its checkers decide pairs of a random model's
    replies often enough; the demo's sums would all be ties)."""
    recipe = {
        "policy": str(policy),
        "prompts": str(REPO / "data/tasks/instructions/train.jsonl"),
        "eval_prompts": str(REPO / "data/tasks/instructions/eval.jsonl"),
        "output_dir": str(tmp_path / "loop"),
        "rounds": 1,
        "prompts_per_round": 96,
        "eval_limit": 4,
        "eval_samples_per_prompt": 1,
        "rm_eval_fraction": 0.25,
        "label_add": {"k": 2, "max_new_tokens": 16, "engine": {"kind": "hf"}},
        "rm": {"max_length": 320, "truncate": True, "batch_size": 4, "max_steps": 2, "eval_steps": 1000},
        "ppo": {
            "engine": "hf",
            "iterations": 1,
            "prompts_per_iteration": 2,
            "samples_per_prompt": 2,
            "max_new_tokens": 8,
            "max_prompt_tokens": 192,
            "minibatch_size": 4,
            "micro_batch_size": 4,
            "save_every": 0,
            "report_to": ["none"],
            "num_threads": 1,
        },
        **fields,
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def pairs(path: Path) -> set[str]:
    return {json.dumps([r["prompt"], sorted([r["chosen"][0]["content"], r["rejected"][0]["content"]])])
            for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}  # fmt: skip


@pytest.mark.slow
def test_two_rounds_each_in_its_directory_with_a_table_row_and_a_finished_round_skipped(
    tiny_model_dir: Path, tmp_path: Path, run_align
) -> None:
    recipe = loop_recipe(tmp_path, tiny_model_dir)
    loop = tmp_path / "loop"
    first = run_align(["loop", "--config", str(recipe)], timeout=900)
    assert first.returncode == 0, first.stderr[-4000:]
    one = loop / "round-1"
    for path in (
        "prompts.jsonl",
        "rm/rm_metrics.json",
        "ppo/policy/config.json",
        "ppo/quality.json",
        "round.json",
    ):
        assert (one / path).is_file(), path
    finished = {
        p: p.stat().st_mtime_ns for p in [*one.glob(".pipeline/*.done"), one / "rm/model.safetensors"]
    }

    second = run_align(["loop", "--config", str(recipe), "--rounds", "2"], timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "round 1/2: finished earlier, skipped" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing of round 1 redone
    two = loop / "round-2"
    recipe_two = yaml.safe_load((two / "recipe.yaml").read_text())
    # Round 2 samples round 1's policy, on the next prompts, and its RM starts from round 1's.
    assert recipe_two["label-add"]["checkpoints"] == [str(one / "ppo/policy")]
    assert recipe_two["rm"]["model"] == str(one / "rm")
    assert recipe_two["ppo"]["policy"] == str(one / "ppo/policy")
    assert recipe_two["ppo"]["reference"] == str(tiny_model_dir)
    train = (REPO / "data/tasks/instructions/train.jsonl").read_text(encoding="utf-8").splitlines()
    assert (two / "prompts.jsonl").read_text(encoding="utf-8").splitlines() == train[96:192]
    # A pair stays on its side: round 1's held-out pairs are held out again, never trained on.
    held_one, held_two = pairs(one / "rm_held_out.jsonl"), pairs(two / "rm_held_out.jsonl")
    assert held_one <= held_two and not held_one & pairs(two / "rm_train.jsonl")

    rows = json.loads((loop / "loop.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[1]["labels"] > rows[0]["labels"] > 0
    quality = json.loads((two / "ppo/quality.json").read_text())
    assert rows[1]["policy_correct"] == quality["policy"]["correct"]
    assert rows[1]["policy_rm_score"] == quality["policy"]["reward_mean"]
    assert (
        rows[1]["rm_accuracy"] == json.loads((two / "rm/rm_metrics.json").read_text())["accuracy"]["overall"]
    )
    table = (loop / "loop.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in table if line.startswith("| ") and line[2].isdigit()] == [
        "1",
        "2",
    ]


@pytest.mark.slow
def test_with_people_the_loop_stops_until_the_round_is_labelled_in_the_app(
    tiny_model_dir: Path, tmp_path: Path, run_align
) -> None:
    annotators = tmp_path / "annotators.jsonl"
    annotators.write_text(json.dumps({"name": "ann", "password": "pw"}) + "\n")
    recipe = loop_recipe(
        tmp_path,
        tiny_model_dir,
        labeller="people",
        prompts_per_round=16,
        rm_eval_fraction=0.5,
        label_add={"k": 2, "max_new_tokens": 8, "engine": {"kind": "hf"}, "annotators": str(annotators)},
    )
    loop = tmp_path / "loop"
    waiting = run_align(["loop", "--config", str(recipe)], timeout=600)
    assert waiting.returncode == 0, waiting.stderr[-4000:]
    assert "Label them in the app (align label serve" in waiting.stderr
    assert json.loads((loop / "loop.json").read_text()) == []
    assert not (loop / "round-1/rm").exists()

    store = PreferenceStore(f"sqlite:///{(loop / 'labels.sqlite').resolve()}", create=False)
    try:
        while (task := store.next_task("ann")) is not None:  # what the app records
            choice = "A" if len(task.response_a) >= len(task.response_b) else "B"
            store.record_label(
                "ann", task.assignment_id, dict.fromkeys(("helpful", "harmless", "honest", "overall"), choice)
            )
    finally:
        store.close()

    done = run_align(["loop", "--config", str(recipe)], timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads((loop / "loop.json").read_text())
    assert [r["round"] for r in rows] == [1] and rows[0]["labels"] == 16
    assert (loop / "round-1/ppo/policy/config.json").is_file()

    # An unfinished round whose pairs changed (here: another held-out share) trains again, not
    # only the stages whose settings changed.
    (loop / "round-1/round.json").unlink()
    again = run_align(["loop", "--config", str(recipe), "--rm_eval_fraction", "0.25"], timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "the labelled pairs changed since its reward model trained; training again" in again.stderr
    held_out = len((loop / "round-1/rm_held_out.jsonl").read_text().splitlines())
    assert json.loads((loop / "round-1/rm/rm_metrics.json").read_text())["eval_pairs"] == held_out
    assert held_out != rows[0]["rm_held_out_pairs"]
    assert json.loads((loop / "loop.json").read_text())[0]["rm_held_out_pairs"] == held_out


@pytest.mark.slow
def test_dpo_as_the_update_trains_on_the_rounds_pairs_and_is_scored_as_ppo_is(
    tiny_model_dir: Path, tmp_path: Path, run_align
) -> None:
    dpo = {"max_length": 320, "truncate": True, "batch_size": 4, "max_steps": 1, "eval_steps": 1000}
    recipe = loop_recipe(tmp_path, tiny_model_dir, update="dpo", ppo={}, dpo=dpo)
    result = run_align(["loop", "--config", str(recipe)], timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    one = tmp_path / "loop/round-1"
    recipe_one = yaml.safe_load((one / "recipe.yaml").read_text())
    assert recipe_one["pipeline"]["stages"][-1] == "dpo" and "ppo" not in recipe_one
    assert recipe_one["dpo"]["train_file"] == str(one / "rm_train.jsonl")
    assert recipe_one["dpo"]["eval_file"] == str(one / "rm_held_out.jsonl")
    held_out = len((one / "rm_held_out.jsonl").read_text().splitlines())
    assert json.loads((one / "dpo/eval.json").read_text())["implicit_reward_accuracy"]["n"] == held_out
    quality = json.loads((one / "quality.json").read_text())
    assert quality["policy"]["samples"] == quality["reference"]["samples"] == 4
    [row] = json.loads((tmp_path / "loop/loop.json").read_text())
    assert row["policy_correct"] == quality["policy"]["correct"]
    assert row["policy_rm_score"] == quality["policy"]["reward_mean"]


def test_settings_the_loop_fills_in_are_refused_at_the_door(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = str(loop_recipe(tmp_path, tiny_model_dir))
    assert main(["loop", "--config", recipe, "--check_config"]) == 0
    assert main(["loop", "--config", recipe, "--ppo", '{"policy": "elsewhere"}', "--check_config"]) == 2
    assert "ppo.policy: set by the loop" in capsys.readouterr().err
    assert main(["loop", "--config", recipe, "--rm", '{"learning_rte": 0.1}', "--check_config"]) == 2
    assert "rm.learning_rte: unknown key for RewardStageConfig" in capsys.readouterr().err
    assert main(["loop", "--config", recipe, "--label_add", '{"k": "many"}', "--check_config"]) == 2
    assert "label_add.k: expected an integer" in capsys.readouterr().err
    assert main(["loop", "--config", recipe, "--labeller", "crowd", "--check_config"]) == 2
    assert "labeller" in capsys.readouterr().err


def test_the_shipped_loop_recipe_validates(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    recipe = str(REPO / "scripts/recipes/loop_smollm2.yaml")
    assert main(["loop", "--config", recipe, "--run_dir", str(tmp_path), "--check_config"]) == 0
