"""The runner's checks before the first notebook: hub models, recipe sources, and the one-paragraph
report of a notebook that fails."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from rlhf_utils import cli
from rlhf_utils.config import load_config
from rlhf_utils.pipeline import NotebookFailed, execute_notebook, run_pipeline
from rlhf_utils.preflight import PreflightError, check_model, preflight

FIXTURES = Path(__file__).parent / "fixtures"


def local_recipe(tmp_path: Path, edit=None) -> Path:
    """The fixture mixture copied to ``tmp_path``; ``edit(dir)`` may damage a file first."""
    for f in FIXTURES.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    if edit:
        edit(tmp_path)
    return tmp_path / "local_mixture.yaml"


def overrides_for(recipe: Path, **models: str) -> dict[str, str]:
    """colab_t4 on a local recipe, with local (or named) models: no network needed."""
    overrides = {"data.recipe": str(recipe)}
    for key in ("policy", "reward_model", "preference_model"):
        overrides[f"models.{key}"] = models.get(key, "sft" if key == "reward_model" else str(recipe.parent))
    return overrides


def config_for(recipe: Path, **models: str):
    return load_config("colab_t4", overrides_for(recipe, **models))


def test_a_good_local_recipe_passes_and_lists_what_it_checked(tmp_path):
    checked = preflight(config_for(local_recipe(tmp_path)))
    assert "sft[0]: " + str(tmp_path / "rlhflow_sft.jsonl") + " (train)" in checked
    assert sum(c.startswith("iteration_prompts[") for c in checked) == 3


def test_an_sft_row_in_the_wrong_order_is_named_before_any_notebook(tmp_path):
    def assistant_first(d: Path) -> None:
        rows = [json.loads(line) for line in (d / "rlhflow_sft.jsonl").read_text().splitlines()]
        rows[1]["conversations"] = [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi."}]
        (d / "rlhflow_sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    recipe = local_recipe(tmp_path, assistant_first)
    with pytest.raises(PreflightError, match=r"local_mixture: sft\[0\]: dataset .*rlhflow_sft.jsonl, split 'train': "
                                             r"row 1: field 'conversations'\[0\]: role 'assistant' out of order"):
        preflight(config_for(recipe))


def test_a_missing_column_names_dataset_split_column_and_adapter(tmp_path):
    def drop_rejected(d: Path) -> None:
        rows = [json.loads(line) for line in (d / "preference_700k.jsonl").read_text().splitlines()]
        (d / "preference_700k.jsonl").write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "rejected"}) for r in rows))

    with pytest.raises(PreflightError, match=r"preference\[0\]: dataset .*preference_700k.jsonl, split 'train': "
                                             r"adapter 'preference_700k' reads column 'rejected'"):
        preflight(config_for(local_recipe(tmp_path, drop_rejected)))


def test_an_unreachable_hub_model_names_the_key(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(PreflightError, match=r"models.policy: cannot reach the Hugging Face Hub to fetch Qwen/Qwen2.5-0.5B"):
        preflight(config_for(local_recipe(tmp_path), policy="Qwen/Qwen2.5-0.5B-Instruct"))


def test_a_gated_model_says_how_to_get_access(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def gated(repo_id, filename, **_):
        err = GatedRepoError.__new__(GatedRepoError)  # as raised on a 403; its HTTP response is not needed here
        Exception.__init__(err, "403 Client Error: access to this model is restricted")
        raise err

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(PreflightError, match=r"models.policy: meta-llama/Meta-Llama-3-8B is a gated model. Accept its "
                                             r"licence at https://huggingface.co/meta-llama/Meta-Llama-3-8B.*HF_TOKEN"):
        check_model("models.policy", "meta-llama/Meta-Llama-3-8B")


def test_the_runner_stops_before_the_first_notebook(tmp_path):
    recipe = local_recipe(tmp_path, lambda d: (d / "alpaca_eval.json").write_text("[]"))
    start = time.time()
    with pytest.raises(PreflightError, match=r"eval_prompts\[0\]: dataset .*alpaca_eval.json, split 'eval'"):
        run_pipeline("colab_t4", tmp_path / "run", overrides_for(recipe), progress=False)
    assert time.time() - start < 30 and not (tmp_path / "run/notebooks").exists()


def test_a_failing_cell_is_one_paragraph_with_the_cell_and_the_trace_file(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('sft.jsonl: row 3: bad turn')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "01_demo.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(NotebookFailed) as err:
        execute_notebook(source, tmp_path / "out/01_demo.ipynb", None, progress=False)
    assert str(err.value) == ("notebook 01_demo.ipynb failed at In [2]: ValueError: sft.jsonl: row 3: bad turn\n"
                              f"The executed notebook, with the full trace, is {tmp_path / 'out/01_demo.ipynb'}")
    assert "bad turn" in (tmp_path / "out/01_demo.ipynb").read_text()


def test_the_cli_reports_a_failed_notebook_without_a_traceback(tmp_path, capsys):
    """Notebook 02 on an empty run dir: no SFT model to start from."""
    code = cli.main(["run", "--run-dir", str(tmp_path / "run"), "--notebooks", "02_reward_model.ipynb", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rlhf-workflow: notebook 02_reward_model.ipynb failed at In [")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert str(tmp_path / "run/notebooks/02_reward_model.ipynb") in err
