"""The sweep: grid files checked before any work, artifacts shared by fingerprint, the report."""

import json

import pytest

from rlhf_utils.config import ConfigError, load_config
from rlhf_utils.sweep import Variant, effect, load_grid, notebooks_to_run, share_artifacts
from rlhf_utils.artifacts import RunDir, atomic_dir, write_stamped_json


def write(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_a_grid_expands_sweeps_and_checks_every_variant(tmp_path):
    grid = load_grid(write(tmp_path, """
base: {online.prompts_per_iteration: 64}
variants:
  - {label: paper, knob: baseline, set: {}}
  - {label: random, knob: pair rule, set: {online.selection: random}}
sweeps:
  - {knob: DPO beta, key: dpo.beta, values: [0.05, 0.2]}
"""), "tiny")
    assert [v.label for v in grid.variants] == ["paper", "random", "dpo.beta=0.05", "dpo.beta=0.2"]
    assert grid.variants[3].overrides == {"dpo.beta": 0.2} and grid.base == {"online.prompts_per_iteration": 64}


@pytest.mark.parametrize("body, message", [
    ("variants:\n  - {label: a, set: {online.selektion: random}}\n",
     r"grid.yaml: variant 'a' \(baseline\): .*online.selektion"),
    ("variants:\n  - {label: a, set: {dpo.beta: high}}\n", r"grid.yaml: variant 'a' \(baseline\): .*dpo.beta"),
    ("variants:\n  - {label: a, knob: k, set: {}}\n  - {label: a, knob: k, set: {dpo.beta: 0.2}}\n",
     r"grid.yaml: variant 'a' \(k\): duplicate label"),
    ("variants: []\n", r"grid.yaml: no variants"),
    ("variants:\n  - {label: a, sett: {}}\n", r"grid.yaml: variants\[0\]: unknown field\(s\) sett"),
])
def test_a_bad_grid_stops_with_one_line_naming_file_variant_and_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_grid(write(tmp_path, body), "tiny")


def test_the_cli_refuses_a_bad_grid_before_any_work(tmp_path, capsys):
    from rlhf_utils.cli import main

    grid = write(tmp_path, "variants:\n  - {label: a, set: {online.k: 1}}\n")
    assert main(["sweep", "--grid", str(grid), "--seeds", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml: variant 'a' (baseline): online.k" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_artifacts_are_shared_exactly_when_their_fingerprint_matches(tmp_path):
    donor = RunDir.open(tmp_path / "donor", load_config("tiny"))
    for rel, phase in [("models/sft", "sft"), ("online/iter_1/samples", "generate:1"), ("online/iter_1/pairs", "pair:1")]:
        with atomic_dir(donor / rel, donor.stamp(phase)) as tmp:
            (tmp / "w").write_text(phase)
    write_stamped_json(donor / "eval/sft.json", {"summary": {}}, donor.stamp("eval:sft"))
    variant = RunDir.open(tmp_path / "variant", load_config("tiny", {"online.selection": "random"}))
    shared = share_artifacts([donor.path], variant)
    assert shared == ["eval:sft", "generate:1", "sft"]           # the pairs depend on the pair rule
    assert (variant / "models/sft/w").stat().st_ino == (donor / "models/sft/w").stat().st_ino  # a hard link
    assert not (variant / "online/iter_1/pairs").exists()
    assert notebooks_to_run([*shared, "data"]) == ["02_reward_model.ipynb", "03_preference_model.ipynb", "04_online_iterative_dpo.ipynb"]
    assert notebooks_to_run(["data", "sft", "reward_model", "preference_model"]) == ["04_online_iterative_dpo.ipynb"]


def test_an_effect_is_resolved_only_when_every_seed_agrees_beyond_two_standard_errors():
    base = {1: {"w": 0.80}, 2: {"w": 0.82}, 3: {"w": 0.78}}
    assert effect({1: {"w": 0.70}, 2: {"w": 0.73}, 3: {"w": 0.69}}, base, "w")["resolved"]
    assert not effect({1: {"w": 0.85}, 2: {"w": 0.78}, 3: {"w": 0.80}}, base, "w")["resolved"]  # signs disagree
    one = effect({1: {"w": 0.5}}, {1: {"w": 0.9}}, "w")
    assert not one["resolved"] and one["se"] is None              # one seed is never a win


@pytest.mark.e2e
def test_notebook_06_sweep_shares_the_run_and_reports_every_variant(tiny_run):
    """The tiny run's notebook 06 is a one-seed sweep of two variants against the run itself: the
    baseline is the run (nothing re-run); each variant links the models and what its knob leaves
    unchanged, executes notebook 04 only, and leaves that executed notebook in its run dir."""
    run_dir, results = tiny_run
    report = json.loads((run_dir / "ablations/report.json").read_text())
    assert set(report) >= {"grid", "seeds", "date", "machine", "wall_seconds", "baseline", "variants", "offline_dpo", "peer"}
    assert report["seeds"] == [42] and len(report["variants"]) == 3
    base, random_pairs, penalised = report["variants"]
    assert base["notebooks"]["42"] == [] and base["run_dirs"]["42"] == str(run_dir)
    # the baseline's numbers are the run's own last iteration
    assert base["aggregate"]["win_rate_vs_sft"]["mean"] == results["online_dpo"]["iterations"][-1]["win_rate_vs_sft"]
    # the gap to offline DPO, the offline data's distance from the policy, and the judges, per variant
    assert base["aggregate"]["offpolicy_distance"]["mean"] == results["offline_dpo"]["offpolicy_distance"] > 0
    gap = results["online_dpo"]["iterations"][-1]["win_rate_vs_sft"] - results["offline_dpo"]["win_rate_vs_sft"]
    assert base["aggregate"]["online_minus_offline_win_rate"]["mean"] == pytest.approx(gap)
    assert base["aggregate"]["pm_position_consistency"]["mean"] == results["preference_model"]["position_consistency"]
    for row in (random_pairs, penalised):
        assert row["notebooks"]["42"] == ["04_online_iterative_dpo.ipynb"]
        shared = set(row["shared_phases"]["42"])
        assert {"sft", "reward_model", "preference_model", "eval:sft", "generate:1", "score:1"} <= shared
        assert "pair:1" not in shared and "policy:1" not in shared          # the pair rule changes the pairs
        slug = Variant(row["label"], row["knob"]).slug
        assert (run_dir / "ablations/seed_42" / slug / "notebooks/04_online_iterative_dpo.ipynb").exists()
        assert set(row["aggregate"]) >= {"win_rate_vs_sft", "gold_reward", "lc_win_rate_vs_sft", "rm_win_rate_vs_sft",
                                         "mean_length", "kl_to_ref", "online_seconds", "wall_seconds"}
        assert row["effect_vs_baseline"]["seeds"] == 1 and not row["effect_vs_baseline"]["resolved"]
        assert row["commands"]["42"].startswith("rlhf-workflow run --preset tiny --seed 42 --set online.selection=")
    assert random_pairs["aggregate"]["win_rate_vs_sft"] != base["aggregate"]["win_rate_vs_sft"]
    assert (run_dir / "ablations/report.md").read_text().count("| pair rule | random |") == 2  # both tables
    assert (run_dir / "ablations/pair_rule.png").stat().st_size > 1000
    assert [(v["knob"], v["label"]) for v in results["ablations"]["variants"]] == [
        ("baseline", "max_min (paper)"), ("pair rule", "random"), ("pair rule", "max_min_p, lambda 0.05")]


@pytest.mark.e2e
def test_a_resumed_sweep_reads_finished_variants_back_and_a_changed_knob_is_redone(tiny_run, monkeypatch):
    """--resume: every variant of notebook 06's sweep finished with the same fingerprints, so no
    notebook runs and the report is the same; with another DPO beta the variants must be redone."""
    from rlhf_utils import pipeline
    from rlhf_utils.sweep import run_sweep

    run_dir, _ = tiny_run
    before = json.loads((run_dir / "ablations/report.json").read_text())

    def no_notebook(*args, **kwargs):
        raise AssertionError("a finished variant was run again")

    monkeypatch.setattr(pipeline, "execute_notebook", no_notebook)
    grid = pipeline.REPO_ROOT / "sweeps/notebook_06.yaml"
    again = run_sweep("tiny", grid, seeds=1, out_dir=run_dir / "ablations", shared_run=run_dir, resume=True)
    assert [r["aggregate"] for r in again["variants"]] == [r["aggregate"] for r in before["variants"]]
    with pytest.raises(AssertionError, match="run again"):
        run_sweep("tiny", grid, seeds=1, out_dir=run_dir / "ablations", overrides={"dpo.beta": 0.2},
                  shared_run=run_dir, resume=True)


@pytest.mark.e2e
def test_the_cli_sweep_runs_each_variant_in_its_own_dir_sharing_the_seeds_models(tiny_run, tmp_path, capsys):
    """`rlhf-workflow sweep` on a reduced grid (one seed, two variants, 32 prompts per iteration, K=4):
    the seed's shared stages are reused from a finished run (hard-linked in, as a resumed sweep
    finds them), the baseline and the variant each execute notebook 04 in their own run dir, the
    variant shares the baseline's samples and scores, and the report holds both."""
    from rlhf_utils.cli import main
    from rlhf_utils.sweep import _link_tree

    run_dir, _ = tiny_run
    out = tmp_path / "sweep"
    for part in ("data", "models/sft", "models/reward_model", "models/preference_model", "results.json"):
        _link_tree(run_dir / part, out / "seed_42/shared" / part)
    grid = write(tmp_path, """
base: {online.prompts_per_iteration: 32, online.k: 4}
variants:
  - {label: paper, knob: baseline, set: {}}
  - {label: random, knob: pair rule, set: {online.selection: random}}
""")
    assert main(["sweep", "--grid", str(grid), "--seeds", "1", "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "sweep: seed 42 | pair rule: random | gold win rate" in printed and "| pair rule | random |" in printed
    report = json.loads((out / "report.json").read_text())
    base, random_pairs = report["variants"]
    for row in (base, random_pairs):
        assert row["notebooks"]["42"] == ["04_online_iterative_dpo.ipynb"]
        assert {"sft", "reward_model", "preference_model"} <= set(row["shared_phases"]["42"])
        assert (out / "seed_42" / Variant(row["label"], row["knob"]).slug / "notebooks/04_online_iterative_dpo.ipynb").exists()
    assert {"generate:1", "score:1", "eval:sft"} <= set(random_pairs["shared_phases"]["42"])
    assert "pair:1" not in random_pairs["shared_phases"]["42"]
    stats = json.loads((out / "seed_42/baseline_paper/online/iter_1/stats.json").read_text())["stats"]
    assert stats["prompts"] == 32 and base["per_seed"]["42"]["generated_samples"] == 3 * 32 * 4
