"""Config loading: types, nesting, multi-stage recipes, run_dir substitution, range checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from align.config import ConfigError, check_range, field_docs, load_config


@dataclass
class Phase:
    name: str
    """The phase's name."""
    weights: dict[str, float] = field(default_factory=dict)
    """Mixture weights per source."""


@dataclass
class Example:
    learning_rate: float = 1e-3
    """Peak learning rate."""
    steps: int = 10
    """Optimizer steps."""
    packing: bool = True
    """Pack documents."""
    mode: Literal["stop", "epoch"] = "stop"
    """What to do when a source runs out."""
    output_dir: Path = Path("out")
    """Where to write."""
    phases: list[Phase] = field(default_factory=list)
    """The phase plan."""
    resume: str | None = None
    """`auto` or a checkpoint path."""

    def __post_init__(self) -> None:
        check_range("learning_rate", self.learning_rate, 0, 1)


def test_overrides_are_coerced_from_strings():
    config = load_config(Example, overrides={"learning_rate": "1e-4", "steps": "5", "packing": "false"})
    assert (config.learning_rate, config.steps, config.packing) == (1e-4, 5, False)


def test_nested_dataclasses_are_built_from_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("phases:\n  - name: one\n    weights: {en: 0.7, zh: 0.3}\n  - name: two\n")
    config = load_config(Example, recipe)
    assert config.phases == [Phase("one", {"en": 0.7, "zh": 0.3}), Phase("two")]


def test_nested_unknown_key_names_its_full_path(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("phases:\n  - name: one\n    wieghts: {en: 1}\n")
    with pytest.raises(ConfigError, match=r"^phases\[0\]\.wieghts: unknown key"):
        load_config(Example, recipe)


def test_multi_stage_recipe_reads_its_section_and_substitutes_run_dir(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "run_dir: /runs/x\npipeline: {stages: [example]}\nexample:\n  output_dir: ${run_dir}/out\n"
    )
    config = load_config(Example, recipe, section="example")
    assert config.output_dir == Path("/runs/x/out")


def test_out_of_range_value_names_the_bounds():
    with pytest.raises(ConfigError, match=r"learning_rate: 5.0 is out of range; allowed \[0, 1\]"):
        load_config(Example, overrides={"learning_rate": "5"})


def test_optional_accepts_none():
    assert load_config(Example, overrides={"resume": "none"}).resume is None
    assert load_config(Example, overrides={"resume": "auto"}).resume == "auto"


def test_integer_field_refuses_a_fraction():
    with pytest.raises(ConfigError, match="steps: expected an integer, got '2.5'"):
        load_config(Example, overrides={"steps": "2.5"})


def test_every_field_has_a_docstring():
    assert set(field_docs(Example)) == {
        "learning_rate",
        "steps",
        "packing",
        "mode",
        "output_dir",
        "phases",
        "resume",
    }


def test_a_recipe_extends_another_and_overrides_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "run_dir: /runs/big\npipeline: {stages: [example]}\nexample: {steps: 100, learning_rate: 0.1}\n"
    )
    (tmp_path / "small.yaml").write_text("extends: base.yaml\nrun_dir: /runs/small\nexample: {steps: 2}\n")
    config = load_config(Example, tmp_path / "small.yaml", section="example")
    assert (config.steps, config.learning_rate) == (2, 0.1)
