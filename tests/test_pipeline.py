"""End to end: the tiny preset through papermill, shared by every test here (one run)."""

import json
import shutil

import pytest
from datasets import load_from_disk

from conftest import deterministic_numbers
from rlhf_utils import online
from rlhf_utils.config import load_config
from rlhf_utils.pipeline import NOTEBOOKS, run_pipeline

pytestmark = pytest.mark.e2e


def test_results_have_sft_block(tiny_run):
    _, results = tiny_run
    sft = results["sft"]
    assert 0.0 <= sft["random_init_gold_reward"] < sft["gold_reward"] < 1.0
    assert sft["gold_reward"] > 0.8 * sft["teacher_gold_reward"], "SFT should get close to the teacher it imitates"
    assert results["timings"]["sft"] > 0


def test_online_and_offline_blocks(tiny_run):
    _, results = tiny_run
    its = results["online_dpo"]["iterations"]
    assert [s["iteration"] for s in its] == [1, 2, 3]
    for s in its:
        for key in ("gold_reward", "win_rate_vs_sft", "proxy_reward", "kl_to_ref", "mean_length", "pairs", "seconds"):
            assert key in s, key
        assert 0 <= s["win_rate_vs_sft"] <= 1 and 0 < s["pairs"] <= 512
    off = results["offline_dpo"]
    assert off["pairs"] == sum(s["pairs"] for s in its)
    assert {"gold_reward", "win_rate_vs_sft", "pairs", "seconds"} <= set(off)
    # The online loop must at least improve on SFT (the stronger claims are measured, not asserted).
    assert its[-1]["win_rate_vs_sft"] > 0.5


def test_resume_skips_finished_phases(tiny_run, tmp_path):
    """A resumed run over a finished run dir reuses every artifact and reports the same numbers."""
    import shutil

    run_dir, results = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "models/iter_3")
    (copy / "online/iter_3/stats.json").unlink()
    (copy / "eval/iter_3.json").unlink()
    again = run_pipeline("tiny", copy, notebooks=["04_online_iterative_dpo.ipynb"], progress=False, resume=True)
    assert deterministic_numbers(again["online_dpo"]) == deterministic_numbers(results["online_dpo"])
    executed = (copy / "notebooks/04_online_iterative_dpo.ipynb").read_text()
    assert "reusing the finished checkpoint" in executed


def test_resume_refuses_another_config(tiny_run):
    from rlhf_utils.config import ConfigError

    run_dir, _ = tiny_run
    with pytest.raises(ConfigError, match="another configuration"):
        run_pipeline("tiny", run_dir, overrides={"runtime.seed": 1}, notebooks=["01_sft.ipynb"], resume=True)


def test_manifest_and_notebooks(tiny_run):
    run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 42
    assert manifest["packages"]["trl"] and manifest["packages"]["torch"]
    assert "models/sft/model.safetensors" in manifest["artifacts"]
    for name in NOTEBOOKS:
        assert (run_dir / "notebooks" / name).exists()


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """A second run with the same seed reproduces every number exactly on the CPU."""
    _, results = tiny_run
    again = run_pipeline("tiny", tmp_path / "again", progress=False)
    assert deterministic_numbers(again) == deterministic_numbers(results)


def test_reward_model_block(tiny_run):
    _, results = tiny_run
    rm = results["reward_model"]
    assert set(rm["accuracy_by_category"]) == {"easy", "hard", "length_trap"}
    assert 0.5 < rm["accuracy"] <= 1 and 0.5 < rm["gold_ceiling"] <= 1
    assert rm["accuracy"] >= 0.85 * rm["gold_ceiling"], "the RM should get close to the gold ceiling"
    assert -1 <= rm["length_correlation"] <= 1
    assert results["timings"]["reward_model"] > 0


def test_preference_model_block(tiny_run):
    _, results = tiny_run
    pm = results["preference_model"]
    assert 0.5 < pm["accuracy"] <= 1 and 0 <= pm["position_consistency"] <= 1
    assert set(pm["accuracy_by_category"]) == {"easy", "hard", "length_trap"}
    k = 8
    assert pm["ranking"]["PM round robin"]["comparisons per prompt"] == k * (k - 1) / 2
    assert pm["ranking"]["PM knockout"]["comparisons per prompt"] == (k - 1) + (k - 2)
    assert results["timings"]["preference_model"] > 0


def test_data_parallel_generation_keeps_every_prompt(tiny_run, tmp_path):
    """online.data_parallel_size=2 through the module entry point: two worker processes sample
    iteration 1's prompts (512, split 256 + 256); every prompt comes back, in order, with K samples."""
    run_dir, _ = tiny_run
    copy = tmp_path / "dp"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "online/iter_1")
    args = ["generate", "--iteration", "1", "--run-dir", str(copy), "--set", "online.data_parallel_size=2"]
    assert online.main(args) == 0
    samples, single = load_from_disk(str(copy / "online/iter_1/samples")), load_from_disk(str(run_dir / "online/iter_1/samples"))
    assert samples["prompt"] == single["prompt"]
    assert all(len(r) == load_config("tiny").online.k for r in samples["responses"])
    assert json.loads((copy / "online/iter_1/rollout.json").read_text())["new_tokens"] > 0
    assert not (copy / "online/iter_1/shards").exists()
