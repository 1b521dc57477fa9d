"""A one-seed benchmark on a reduced configuration: the report files and their contents."""

import json

import pytest

from rlhf_utils.bench import run_bench

pytestmark = pytest.mark.e2e

REDUCED = {
    "world.n_sft_prompts": 400, "world.n_pref_prompts": 200, "world.n_iteration_prompts": 32,
    "world.n_eval_prompts": 32, "sft.epochs": 1, "reward_model.epochs": 1, "preference_model.epochs": 1,
    "online.iterations": 2, "online.k": 4, "eval.bootstrap_samples": 100,
}


def test_one_seed_bench_writes_both_reports(tmp_path):
    run_bench("tiny", seeds=1, out_dir=tmp_path, overrides=REDUCED)
    report = json.loads((tmp_path / "report.json").read_text())
    agg = report["aggregate"]
    for key in ("sft_gold_reward", "rm_accuracy", "rm_accuracy_vs_gold_order", "annotator_self_agreement", "pm_accuracy", "offline_offpolicy_distance", "pm_position_consistency",
                "online_iter1_win_rate", "online_iter2_win_rate", "offline_win_rate", "online_lc_win_rate",
                "seconds_online_dpo", "online_share_generate", "online_share_train"):
        assert key in agg, key
    assert report["peak_memory_mib"] > 0
    # Timings are reported, not asserted: only their presence is checked here.
    assert {"base_seconds", "prompts_x2_ratio", "k_x2_ratio"} <= set(report["scaling"])
    peer = report["peer"]
    assert peer["samples_generated"] == 2 * 32 * 4
    assert 0 <= peer["win_rate_vs_sft"] <= 1 and peer["seconds"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "mean ± std" in md and "OnlineDPOTrainer" in md and "2x prompts" in md
