"""End to end: the tiny preset through papermill, shared by every test here (one run)."""

import json
import shutil

import pytest
from datasets import load_from_disk

from conftest import deterministic_numbers
from rlhf_utils import stage
from rlhf_utils.config import load_config
from rlhf_utils.pipeline import NOTEBOOKS, NotebookFailed, run_pipeline

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
    # The offline pairs are other writers' answers: less likely under the SFT model than its own samples.
    assert off["offpolicy_distance"] == pytest.approx(off["own_logprob_per_token"] - off["offline_logprob_per_token"])
    assert off["offpolicy_distance"] > 0.1
    # The online loop must at least improve on SFT (the stronger claims are measured, not asserted).
    assert its[-1]["win_rate_vs_sft"] > 0.5


def test_headline_numbers_lie_in_their_cross_machine_ranges(tiny_run):
    """Ranges, not one machine's values: another CPU moves these numbers by about the seed spread
    (seed 42 on the notebooks' machine: SFT 0.599, RM accuracy 0.754 with reward-length correlation
    0.19, PM 0.725, iterations 0.681 / 0.719 / 0.663, offline 0.702), so each range is wide enough
    for any machine and narrow enough to catch a broken stage. The default judge is length-biased,
    so the last iteration may fall back from the best one (the over-optimisation the notebooks show)."""
    _, results = tiny_run
    its, off = results["online_dpo"]["iterations"], results["offline_dpo"]
    assert 0.50 <= results["sft"]["gold_reward"] <= 0.70
    assert 0.65 <= results["reward_model"]["accuracy"] <= 0.85
    assert 0.05 <= results["reward_model"]["length_correlation"] <= 0.40, "the RM inherits the annotator's length bias"
    assert 0.55 <= results["preference_model"]["accuracy"] <= 0.80
    assert 0.55 <= its[-1]["win_rate_vs_sft"] <= 0.92
    assert 0.55 <= off["win_rate_vs_sft"] <= 0.90
    assert max(s["gold_reward"] for s in its) > results["sft"]["gold_reward"] + 0.04
    assert its[-1]["mean_length"] > results["online_dpo"]["sft"]["mean_length"], "the biased judge lengthens the answers"


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
    assert "policy:2: reusing" in executed and "policy:3: reusing" not in executed


def test_changed_pair_rule_reuses_the_models_and_redoes_the_loop(tiny_run, tmp_path):
    """Notebook 04 (then 05) on a finished run with online.selection=random, as `run --from 04` does:
    SFT, reward and preference models are reused (printed), the online phases are redone, and
    results.json holds the new rule's pairs and win rates."""
    from rlhf_utils.pairs import select_pairs

    run_dir, results = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    # as `run --from 04`, without notebook 06 (its sweep has tests of its own)
    again = run_pipeline("tiny", copy, overrides={"online.selection": "random"}, progress=False,
                         notebooks=["04_online_iterative_dpo.ipynb", "05_evaluation.ipynb"])
    executed = (copy / "notebooks/04_online_iterative_dpo.ipynb").read_text()
    for reused in ("sft: reusing", "reward_model: reusing", "generate:1: reusing", "score:1: reusing"):
        assert reused in executed, reused
    assert "pair:1: redoing" in executed and "online.selection: 'max_min' -> 'random'" in executed
    assert "policy:1: redoing" in executed and "pair:1 changed" in executed
    scored = load_from_disk(str(copy / "online/iter_1/scored"))
    cfg = load_config("tiny")
    _, expected = select_pairs(list(scored["prompt"]), list(scored["responses"]), list(scored["rewards"]),
                               "random", 0.0, 0.0, seed=cfg.runtime.seed + 1)
    stats = json.loads((copy / "online/iter_1/stats.json").read_text())["stats"]
    assert stats["pair_stats"] == expected
    new_its, old_its = again["online_dpo"]["iterations"], results["online_dpo"]["iterations"]
    assert [s["pairs"] for s in new_its] == [s["pair_stats"]["pairs"] for s in (
        json.loads((copy / f"online/iter_{t}/stats.json").read_text())["stats"] for t in (1, 2, 3))]
    assert [s["win_rate_vs_sft"] for s in new_its] != [s["win_rate_vs_sft"] for s in old_its]
    assert again["evaluation"]["iter_3"]["win_rate_vs_sft"] == new_its[-1]["win_rate_vs_sft"]
    assert again["sft"] == results["sft"], "upstream results stay as they were"


def test_changed_sft_knob_redoes_sft_and_blocks_stale_downstream_models(tiny_run, tmp_path):
    """sft.learning_rate changed: notebook 01 retrains SFT (data and the initial model reused); the
    reward model, trained from the old SFT model, is then refused by notebook 04 with the reason."""
    run_dir, results = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    again = run_pipeline("tiny", copy, overrides={"sft.learning_rate": 1e-3}, notebooks=["01_sft.ipynb"],
                         progress=False, resume=True)
    executed = (copy / "notebooks/01_sft.ipynb").read_text()
    assert "data: reusing" in executed and "init: reusing" in executed
    assert "sft: redoing" in executed and "sft.learning_rate: 0.002 -> 0.001" in executed
    assert again["sft"]["gold_reward"] != results["sft"]["gold_reward"]
    with pytest.raises(NotebookFailed, match=r"04_online_iterative_dpo.ipynb failed at In \[\d+\]: FileNotFoundError: .*models/reward_model was made with other settings \(sft changed\)"):
        run_pipeline("tiny", copy, overrides={"sft.learning_rate": 1e-3}, start_from="04", progress=False)


def test_manifest_and_notebooks(tiny_run):
    run_dir, _ = tiny_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 42
    assert manifest["packages"]["trl"] and manifest["packages"]["torch"]
    assert "models/sft/model.safetensors" in manifest["artifacts"]
    for name in NOTEBOOKS:
        assert (run_dir / "notebooks" / name).exists()


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """A second run with the same seed reproduces every number exactly on the CPU.

    The shared run's SFT model is trained again from nothing, in a fresh run dir, and its numbers
    must match to the last digit; the crash tests do the same for DPO (online iterations 2 and 3,
    offline DPO), which they retrain from a copy."""
    _, results = tiny_run
    again = run_pipeline("tiny", tmp_path / "again", notebooks=NOTEBOOKS[:1], progress=False)
    assert deterministic_numbers(again["sft"]) == deterministic_numbers(results["sft"])


def test_reward_model_block(tiny_run):
    _, results = tiny_run
    rm = results["reward_model"]
    assert set(rm["accuracy_by_category"]) == {"easy", "hard", "length_trap"}
    assert 0.5 < rm["accuracy"] <= 1 and 0.5 < rm["gold_label_agreement"] <= 1
    assert rm["accuracy"] <= rm["annotator_self_agreement"] + 0.05, "no judge beats the annotator's self-agreement by much"
    assert rm["accuracy"] >= 0.85 * rm["annotator_self_agreement"], "the RM should get close to the label ceiling"
    assert 0.5 < rm["accuracy_vs_gold_order"] <= 1
    assert -1 <= rm["length_correlation"] <= 1
    assert results["timings"]["reward_model"] > 0


def test_preference_model_block(tiny_run):
    _, results = tiny_run
    pm = results["preference_model"]
    assert 0.5 < pm["accuracy"] <= 1 and 0 <= pm["position_consistency"] <= 1 and 0.5 < pm["accuracy_vs_gold_order"] <= 1
    assert set(pm["accuracy_by_category"]) == {"easy", "hard", "length_trap"}
    k = 8
    assert pm["ranking"]["PM round robin"]["comparisons per prompt"] == k * (k - 1) / 2
    assert pm["ranking"]["PM knockout"]["comparisons per prompt"] == (k - 1) + (k - 2)
    assert results["timings"]["preference_model"] > 0


def test_data_parallel_generation_keeps_every_prompt(tiny_run, tmp_path):
    """online.data_parallel_size=2 through the module entry point: two launched processes sample
    iteration 1's prompts (512, split 256 + 256); every prompt comes back, in order, with K samples."""
    run_dir, _ = tiny_run
    copy = tmp_path / "dp"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "online/iter_1")
    args = ["generate", "--iteration", "1", "--run-dir", str(copy), "--set", "online.data_parallel_size=2"]
    assert stage.main(args) == 0
    samples, single = load_from_disk(str(copy / "online/iter_1/samples")), load_from_disk(str(run_dir / "online/iter_1/samples"))
    assert samples["prompt"] == single["prompt"]
    assert all(len(r) == load_config("tiny").online.k for r in samples["responses"])
    assert json.loads((copy / "online/iter_1/rollout.json").read_text())["new_tokens"] > 0
    assert not (copy / "online/iter_1/shards").exists()
