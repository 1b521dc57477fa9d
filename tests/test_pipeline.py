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
    assert _numbers(again["online_dpo"]) == _numbers(results["online_dpo"])
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


def _numbers(results):
    """Every measured number of a run, without wall times."""
    drop = {"timings", "seconds", "phase_seconds", "eval_seconds", "time_share"}
    if isinstance(results, dict):
        return {k: _numbers(v) for k, v in results.items() if k not in drop and "seconds" not in k}
    if isinstance(results, list):
        return [_numbers(v) for v in results]
    return results


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """A second run with the same seed reproduces every number exactly on the CPU."""
    _, results = tiny_run
    again = run_pipeline("tiny", tmp_path / "again", progress=False)
    assert _numbers(again) == _numbers(results)


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
