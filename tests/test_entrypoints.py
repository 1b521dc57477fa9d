"""The module entry points fail fast, with one line naming the problem."""

from rlhf_utils import online, train


def test_train_rejects_bad_override(tmp_path, capsys):
    assert train.main(["dpo", "--run-dir", str(tmp_path), "--set", "online.k=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf_utils.train: error: online.k") and len(err.splitlines()) == 1


def test_online_phase_needs_earlier_stages(tmp_path, capsys):
    assert online.main(["generate", "--iteration", "1", "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run notebooks/01_sft.ipynb first" in err
