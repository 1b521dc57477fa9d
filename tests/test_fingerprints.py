"""Fingerprints: which phases a changed knob redoes, and the reuse / redo decision on disk."""

import json

import pytest

from rlhf_utils.artifacts import FINGERPRINT, RunDir, atomic_dir, read_json, reusable, write_stamped_json
from rlhf_utils.config import load_config
from rlhf_utils.fingerprints import DEPENDS_ON, SPEED_KNOBS, Fingerprints

PHASES = ["data", "prompts", "init", "sft", "reward_model", "preference_model", "eval:sft",
          *[f"{p}:{t}" for t in (1, 2, 3) for p in ("generate", "score", "pair", "policy")],
          *[f"eval:iter_{t}" for t in (1, 2, 3)], "offline_dpo", "eval:offline_dpo"]


def changed(overrides):
    before, after = Fingerprints(load_config("tiny")), Fingerprints(load_config("tiny", overrides))
    return {p for p in PHASES if before(p).digest != after(p).digest}


def test_a_changed_sft_knob_redoes_everything_downstream_of_sft():
    assert changed({"sft.learning_rate": 1e-3}) == set(PHASES) - {"data", "prompts", "init"}


def test_a_changed_pair_rule_redoes_only_the_online_phases_from_pairing_on():
    redo = changed({"online.selection": "random"})
    assert {"data", "init", "sft", "reward_model", "preference_model", "eval:sft", "generate:1", "score:1"}.isdisjoint(redo)
    assert {"pair:1", "policy:1", "eval:iter_1", "generate:2", "policy:3", "offline_dpo"} <= redo


def test_the_judge_and_the_reference_enter_where_they_are_used():
    pm = changed({"online.scorer": "pm"})
    assert "generate:1" not in pm and "score:1" in pm and "reward_model" not in pm
    ref = changed({"online.reference": "previous"})
    assert "pair:1" not in ref and "policy:1" in ref and "generate:2" in ref
    # the preference model's own knobs only matter to the online loop when it is the judge
    assert "score:1" not in changed({"preference_model.epochs": 1})
    assert "preference_model" in Fingerprints(load_config("tiny", {"online.scorer": "pm"}))("score:1").upstream


def test_speed_knobs_are_in_no_fingerprint():
    for key, value in [("online.generation_batch_size", 8), ("online.score_batch_size", 8), ("runtime.num_threads", 1)]:
        assert key in SPEED_KNOBS and not changed({key: value}), key


def test_every_config_key_is_read_by_a_phase_or_is_a_speed_knob():
    values = Fingerprints(load_config("tiny")).values
    read = {k for k in values for keys, _ in DEPENDS_ON.values() for s in keys if k == s or k.startswith(f"{s}.")}
    assert set(values) - read - set(SPEED_KNOBS) <= {"name", "description"}


def test_changes_name_the_key(tmp_path, capsys):
    old, new = Fingerprints(load_config("tiny")), Fingerprints(load_config("tiny", {"online.selection": "random"}))
    with atomic_dir(tmp_path / "pairs", old("pair:1")) as tmp:
        (tmp / "rows.json").write_text("[]")
    assert reusable(tmp_path / "pairs", old("pair:1"))
    assert "pair:1: reusing" in capsys.readouterr().out
    assert not reusable(tmp_path / "pairs", new("pair:1"))
    assert "online.selection: 'max_min' -> 'random'" in capsys.readouterr().out
    assert not (tmp_path / "pairs").exists(), "an artifact made with other settings is removed"
    # downstream phases name the upstream phase that changed
    assert new("policy:1").changes(old("policy:1").record()) == ["pair:1 changed"]


def test_json_artifacts_carry_their_fingerprint(tmp_path):
    old, new = Fingerprints(load_config("tiny")), Fingerprints(load_config("tiny", {"eval.temperature": 0.7}))
    write_stamped_json(tmp_path / "eval.json", {"summary": {"x": 1}}, old("eval:sft"))
    assert json.loads((tmp_path / "eval.json").read_text())["fingerprint"]["phase"] == "eval:sft"
    assert read_json(tmp_path / "eval.json", old("eval:sft"))["summary"] == {"x": 1}
    assert read_json(tmp_path / "eval.json", new("eval:sft")) is None and not (tmp_path / "eval.json").exists()


def test_require_refuses_an_artifact_made_with_other_settings(tmp_path):
    cfg = load_config("tiny")
    run = RunDir.open(tmp_path, cfg)
    with atomic_dir(run / "models/sft", run.stamp("sft")) as tmp:
        (tmp / "w").write_text("x")
    assert run.require("models/sft", "01_sft.ipynb", "sft")
    other = RunDir.open(tmp_path, load_config("tiny", {"sft.epochs": 1}))
    with pytest.raises(FileNotFoundError, match=r"sft.epochs: 6.0 -> 1.0\): run notebooks/01_sft.ipynb"):
        other.require("models/sft", "01_sft.ipynb", "sft")
    assert (tmp_path / "models/sft" / FINGERPRINT).exists(), "require never deletes"


def test_cutting_the_same_prompt_budget_into_more_iterations_keeps_the_models():
    """6 x 256 fresh prompts instead of 3 x 512: the toy world's training data (and so every model
    before the loop) are the same; only the iteration prompt sets and the loop are redone."""
    before = Fingerprints(load_config("tiny"))
    after = Fingerprints(load_config("tiny", {"online.iterations": 6, "world.n_iteration_prompts": 256}))
    for phase in ("data", "init", "sft", "reward_model", "preference_model", "eval:sft"):
        assert before(phase).digest == after(phase).digest, phase
    assert before("prompts").digest != after("prompts").digest
    assert before("generate:1").digest != after("generate:1").digest
    # a different budget changes the training prompts, so the data too
    assert changed({"world.n_iteration_prompts": 256}) >= {"data", "sft"}


def test_fewer_prompts_per_iteration_redo_the_loop_from_sampling_on():
    redo = changed({"online.prompts_per_iteration": 128})
    assert {"data", "sft", "reward_model", "preference_model", "eval:sft"}.isdisjoint(redo)
    assert {"generate:1", "score:1", "pair:1", "policy:3", "offline_dpo"} <= redo


def test_a_recipe_edited_in_place_redoes_the_data(tmp_path):
    from rlhf_utils.recipes import recipe_path

    recipe = tmp_path / "my_world.yaml"
    recipe.write_text(recipe_path("toy_world").read_text())
    cfg = load_config("tiny", {"data.recipe": str(recipe)})
    before = Fingerprints(cfg)("data").record()
    recipe.write_text(recipe.read_text().replace("tea", "soup"))
    changes = Fingerprints(cfg)("data").changes(before)
    assert len(changes) == 1 and changes[0].startswith("derived.recipe_sha256: ")
