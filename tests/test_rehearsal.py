"""The hub path rehearsed: every notebook with colab_t4's structure on the mini hub (one run,
shared by these tests)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from datasets import load_from_disk
from safetensors.torch import load_file

from rlhf_utils import mini_hub
from rlhf_utils.config import load_config
from rlhf_utils.rehearsal import GOLD_KEY, PRESET, RehearsalError, check_results, key_paths, rehearse

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    results = rehearse(root / "run", root / "hub", progress=False)
    return root / "run", root / "hub" / f"v{mini_hub.VERSION}", results


def test_every_notebook_ran_and_every_hub_result_is_there(rehearsal, tiny_run):
    run, _, results = rehearsal
    _, tiny = tiny_run
    expected = {p for p in key_paths(tiny) if not GOLD_KEY.search(p)}
    assert expected <= key_paths(results), sorted(expected - key_paths(results))
    assert (run / "report.md").read_text().count("|") > 10


def test_it_ran_colab_t4_as_it_is(rehearsal):
    run, hub, _ = rehearsal
    ran = yaml.safe_load((run / "config.yaml").read_text())
    plan = load_config(PRESET).to_dict()
    assert ran["models"]["lora"] == plan["models"]["lora"] and plan["models"]["lora"]["enabled"]
    for section, keys in {"online": ("iterations", "k", "selection", "reference"),
                          "dpo": ("global_batch_size", "per_device_batch_size", "learning_rate", "beta")}.items():
        assert {k: ran[section][k] for k in keys} == {k: plan[section][k] for k in keys}
    assert ran["models"]["policy"] == str(hub / mini_hub.MODEL)


def test_the_data_were_streamed_in_the_hub_schema(rehearsal):
    run, _, _ = rehearsal
    assert len(load_from_disk(str(run / "data/sft"))) == mini_hub.SAMPLES["sft"]
    pairs = len(load_from_disk(str(run / "data/preference"))) + len(load_from_disk(str(run / "data/preference_test")))
    assert pairs == mini_hub.SAMPLES["preference"]
    assert len(load_from_disk(str(run / "data/iteration_1"))) == mini_hub.SAMPLES["iteration_prompts"]
    executed = (run / "notebooks/01_sft.ipynb").read_text()
    assert "You are Qwen, created by Alibaba Cloud" in executed, "the ChatML template's default system turn"


def test_lora_adapters_were_trained_and_merged_into_safetensors(rehearsal):
    run, hub, _ = rehearsal
    base = load_file(hub / mini_hub.MODEL / "model.safetensors")
    for name, ref in (("sft", base), ("iter_1", load_file(run / "models/sft/model.safetensors"))):
        weights = load_file(run / f"models/{name}/model.safetensors")
        assert set(weights) == set(ref), f"{name}: a merged checkpoint with the base model's tensors"
        assert any((weights[k] - ref[k]).abs().max() > 0 for k in ref), f"{name}: the adapter changed nothing"
        assert not (run / f"models/{name}/adapter_config.json").exists()


def printed(path: Path) -> str:
    """What an executed notebook's cells printed."""
    cells = nbformat.read(path, as_version=4).cells
    return "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.outputs)


def test_the_summaries_speak_of_the_reward_model_not_of_gold(rehearsal):
    run, _, _ = rehearsal
    text = printed(run / "notebooks/04_online_iterative_dpo.ipynb")
    assert "judged by the reward model, by iteration" in text and "gold" not in text.lower()
    assert "win rate vs SFT judged by the reward model" in printed(run / "notebooks/06_ablations.ipynb")


def test_a_missing_block_or_a_gold_key_fails_the_rehearsal(rehearsal):
    run, _, results = rehearsal
    with pytest.raises(RehearsalError, match="lacks ablations"):
        check_results({k: v for k, v in results.items() if k != "ablations"}, run)
    with pytest.raises(RehearsalError, match=r"gold-reward keys on hub data: sft.gold_reward"):
        check_results(json.loads(json.dumps(results)) | {"sft": results["sft"] | {"gold_reward": 0.5}}, run)


def test_every_model_answered_the_benchmarks_own_questions(rehearsal):
    from rlhf_utils.benchmarks import load_benchmarks
    from rlhf_utils.rehearsal import check_exports, rehearsal_overrides
    from rlhf_utils.report import model_names

    run, hub, _ = rehearsal
    cfg = load_config(PRESET, rehearsal_overrides(hub))
    questions = load_benchmarks(cfg)
    assert {k: len(v) for k, v in questions.items()} == {"alpaca_eval": mini_hub.ROWS["alpaca_eval"],
                                                         "mt_bench": mini_hub.ROWS["mt_bench"]}
    check_exports(run, model_names(cfg), questions)  # rehearse() ran it too; here it must also fail when wrong
    with pytest.raises(RehearsalError, match="mt_bench.jsonl does not answer every MT-Bench question and turn"):
        check_exports(run, ["sft"], questions | {"mt_bench": questions["mt_bench"][1:]})
    line = json.loads((run / "exports/iter_3.mt_bench.jsonl").read_text().splitlines()[0])
    assert line["model_id"] == "colab_t4-iter_3" and len(line["choices"][0]["turns"]) == 2
