"""The notebooks run top to bottom on the tiny recipe and draw their plots (so they never rot).

`notebooks/pipeline.ipynb` runs the whole `scripts/recipes/tiny.yaml` pipeline (corpus to eval
report) through the Python API; here it is pointed at the session's `tiny_run_dir`, which ran that
very pipeline once for every test that needs a complete run, so it plots without training again.
`notebooks/reward_model_study.ipynb` then trains its reward model on that run's SFT model.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def execute(name: str) -> list:
    """Execute a notebook with a kernel on this interpreter; returns its code cells with outputs."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    manager = KernelManager(kernel_name="python3")
    manager.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    client = NotebookClient(
        notebook, km=manager, timeout=900, resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def images(cells: list) -> int:
    return sum("image/png" in out.get("data", {}) for cell in cells for out in cell.outputs)


def summary(cells: list) -> dict:
    """The JSON line the notebook's last cell prints."""
    text = "".join(out.get("text", "") for out in cells[-1].outputs if out.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_dir(tiny_run_dir: Path) -> Path:
    """The session's tiny pipeline run: the notebook's own pipeline call finds every stage done."""
    return tiny_run_dir


@pytest.fixture(scope="module")
def pipeline_cells(run_dir: Path) -> list:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGN_NOTEBOOK_RUN_DIR", str(run_dir))
        patch.setenv("OMP_NUM_THREADS", "1")
        return execute("pipeline.ipynb")


@pytest.mark.slow
def test_pipeline_notebook_runs_every_stage_and_plots_them(pipeline_cells: list, run_dir: Path) -> None:
    stages = ["corpus-train-quality", "corpus", "tokenizer", "pretrain", "sft", "label-add"]
    stages += ["label-judge", "label-export", "rm", "ppo", "eval", "eval-report"]
    assert all((run_dir / ".pipeline" / f"{s}.done").exists() for s in stages)
    assert images(pipeline_cells) >= 5  # pretrain, SFT, RM, PPO curves and the eval chart
    numbers = summary(pipeline_cells)
    assert numbers["pretrain_loss_last"] < numbers["pretrain_loss_first"]
    assert numbers["sft_eval_loss"] < numbers["sft_eval_loss_base"]
    assert numbers["ppo_iterations"] == 3
    assert all(math.isfinite(x) for x in numbers["ppo_reward"] + numbers["ppo_kl"])
    assert numbers["eval_models"] == ["base", "ppo", "sft"]
    assert {"demo", "mmlu", "humaneval"} <= set(numbers["eval_benchmarks"])
    assert (run_dir / "eval" / "tables" / "overview.md").exists()


@pytest.mark.slow
def test_reward_model_study_notebook_measures_agreement_accuracy_and_calibration(
    pipeline_cells: list, run_dir: Path
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIGN_NOTEBOOK_RUN_DIR", str(run_dir))
        patch.setenv("OMP_NUM_THREADS", "1")
        cells = execute("reward_model_study.ipynb")
    assert images(cells) == 2  # accuracy per criterion, calibration
    numbers = summary(cells)
    assert numbers["labels"] == 2 * numbers["pairs"]  # both annotators labelled every pair
    # The noisy annotator agrees with the judge well above chance but not perfectly.
    assert all(0.2 < k < 0.95 for k in numbers["kappa"].values())
    assert all(0.2 < a < 0.95 for a in numbers["alpha"].values())
    assert 0 < numbers["disputed_pairs"] < numbers["pairs"]
    assert set(numbers["accuracy"]) == {"overall", "helpful", "harmless", "honest"}
    assert numbers["accuracy"]["overall"] > 0.5
    assert 0 <= numbers["ece"] <= 0.5
    assert (run_dir / "rm_study" / "rm" / "rm_metrics.json").exists()
    text = "".join(out.get("text", "") for cell in cells for out in cell.outputs)
    assert f"reward model starts from {run_dir / 'sft'}" in text
