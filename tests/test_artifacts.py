import json

import pytest

from rlhf_utils.artifacts import RunDir, atomic_dir, atomic_write_json


def test_atomic_write_json(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with atomic_dir(tmp_path / "ok") as tmp:
        (tmp / "f").write_text("done")
    assert (tmp_path / "ok" / "f").read_text() == "done"
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "broken") as tmp:
            (tmp / "half").write_text("half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]


def test_results_merge_and_timings(tmp_path):
    run = RunDir(tmp_path)
    run.update_results("sft", {"gold_reward": 0.5}, seconds=1.234)
    run.update_results("reward_model", {"accuracy": 0.8}, seconds=2)
    res = run.results()
    assert res["sft"] == {"gold_reward": 0.5} and res["timings"] == {"sft": 1.23, "reward_model": 2}


def test_require_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebooks/01_sft.ipynb first"):
        RunDir(tmp_path).require("models/sft", "01_sft.ipynb")


def test_digest_detects_damage_and_ignores_dataset_caches(tmp_path, capsys):
    from rlhf_utils.artifacts import is_complete

    with atomic_dir(tmp_path / "a") as tmp:
        (tmp / "data.arrow").write_text("rows")
    assert is_complete(tmp_path / "a")
    (tmp_path / "a" / "cache-0123abcd.arrow").write_text("written later by datasets.map")
    assert is_complete(tmp_path / "a"), "a datasets cache file is not damage"
    (tmp_path / "a" / "data.arrow").write_text("rows, truncated")
    assert not is_complete(tmp_path / "a") and not (tmp_path / "a").exists()
    assert "do not match the digest" in capsys.readouterr().out
    assert not is_complete(tmp_path / "never-written")


def test_digest_check_reads_a_file_again_only_when_its_time_changed(tmp_path, monkeypatch):
    """A finished artifact is hashed once, when written; a resume check only stats its files. A copy
    without preserved times is hashed again (and accepted); an edit of the same size is caught."""
    import os

    from rlhf_utils import artifacts

    with atomic_dir(tmp_path / "a") as tmp:
        (tmp / "weights").write_bytes(b"0123456789")
    hashed = []
    real = artifacts.file_digest
    monkeypatch.setattr(artifacts, "file_digest", lambda p: hashed.append(p.name) or real(p))
    assert artifacts.is_complete(tmp_path / "a") and hashed == [], "an untouched artifact is not read again"
    weights = tmp_path / "a" / "weights"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as `cp -r` without -p leaves it
    assert artifacts.is_complete(tmp_path / "a") and hashed == ["weights"]
    weights.write_bytes(b"0123456780")  # same size, other bytes, written later (a later mtime)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert not artifacts.is_complete(tmp_path / "a")
