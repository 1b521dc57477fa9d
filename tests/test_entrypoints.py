"""The module entry points fail fast, with one line naming the problem."""

import subprocess
import sys

from rlhf_utils import stage


def test_stage_rejects_bad_override(tmp_path, capsys):
    assert stage.main(["dpo", "--run-dir", str(tmp_path), "--set", "online.k=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf_utils.stage: error: online.k") and len(err.splitlines()) == 1


def test_online_phase_needs_earlier_stages(tmp_path, capsys):
    assert stage.main(["generate", "--iteration", "1", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run notebooks/01_sft.ipynb first" in err


def test_dpo_stage_without_pairs_makes_them_from_the_earlier_stages(tmp_path, capsys):
    """Without iteration 2's pairs the DPO stage samples and pairs first, which needs the SFT model."""
    from rlhf_utils.artifacts import RunDir
    from rlhf_utils.config import load_config
    from rlhf_utils.data import prepare_data

    prepare_data(load_config("tiny"), RunDir.open(tmp_path, load_config("tiny")))
    assert stage.main(["dpo", "--iteration", "2", "--run-dir", str(tmp_path)]) == 2
    assert "run notebooks/01_sft.ipynb first" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "rlhf_utils.stage", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "generate" in out.stdout and "offline_dpo" in out.stdout


def test_run_from_04_keeps_the_run_dir_and_a_bad_start_is_one_line(tmp_path, capsys, monkeypatch):
    """`rlhf-workflow run --from 04 ... --set online.selection=random` runs 04 onward only, with the
    override, and never clears the run dir (the notebooks themselves are stubbed out here)."""
    from rlhf_utils import cli, pipeline

    ran = []
    monkeypatch.setattr(pipeline, "execute_notebook", lambda src, out, params, progress: ran.append((src.name, params)))
    (tmp_path / "models").mkdir()
    (tmp_path / "models/keep").write_text("an upstream model")
    assert cli.main(["run", "--from", "04", "--run-dir", str(tmp_path), "--set", "online.selection=random", "--no-progress"]) == 0
    assert [name for name, _ in ran] == ["04_online_iterative_dpo.ipynb", "05_evaluation.ipynb", "06_ablations.ipynb"]
    assert ran[0][1]["overrides"] == {"online.selection": "random"}
    assert (tmp_path / "models/keep").exists(), "--from never clears the run dir"
    capsys.readouterr()
    assert cli.main(["run", "--from", "09", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--from: no notebook '09'" in err and len(err.splitlines()) == 1
