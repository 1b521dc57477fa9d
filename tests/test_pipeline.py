"""End to end: the tiny preset through papermill, shared by every test here (one run)."""

import json

import pytest

from rlhf_utils.pipeline import NOTEBOOKS, run_pipeline

pytestmark = pytest.mark.e2e


def test_results_have_sft_block(tiny_run):
    _, results = tiny_run
    sft = results["sft"]
    assert 0.0 <= sft["random_init_gold_reward"] < sft["gold_reward"] < 1.0
    assert sft["gold_reward"] > 0.8 * sft["teacher_gold_reward"], "SFT should get close to the teacher it imitates"
    assert results["timings"]["sft"] > 0


def test_manifest_and_notebooks(tiny_run):
    run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 42
    assert manifest["packages"]["trl"] and manifest["packages"]["torch"]
    assert "models/sft/model.safetensors" in manifest["artifacts"]
    for name in NOTEBOOKS:
        assert (run_dir / "notebooks" / name).exists()


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """A second run of stage 1 with the same seed reproduces the numbers exactly on the CPU."""
    _, results = tiny_run
    again = run_pipeline("tiny", tmp_path / "again", notebooks=["01_sft.ipynb"], progress=False)
    assert again["sft"] == results["sft"]
