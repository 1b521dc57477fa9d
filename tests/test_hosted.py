"""Colab / Kaggle support: the setup cell, badges, persistent run dirs, multi-GPU launch commands."""

import json
from pathlib import Path

import pytest
import yaml

from rlhf_utils import hosted
from rlhf_utils.artifacts import RunDir
from rlhf_utils.config import ACCELERATE_CONFIG_DIR as CONFIG_DIR
from rlhf_utils.config import ConfigError, load_config
from rlhf_utils.launch import launch_command, launched
from rlhf_utils.pipeline import NOTEBOOK_DIR, NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]


def test_every_notebook_starts_with_the_setup_cell_and_a_badge():
    for name in NOTEBOOKS:
        nb = json.loads((NOTEBOOK_DIR / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "".join(code[0]["source"]) == hosted.SETUP_CELL, f"{name}: setup cell differs from rlhf_utils.hosted"
        colab = f"https://colab.research.google.com/github/{hosted.REPO_URL.removeprefix('https://github.com/')}/blob/main/notebooks/{name}"
        assert colab in "".join(nb["cells"][0]["source"]), f"{name}: no Colab badge"
        assert "parameters" in code[1]["metadata"].get("tags", []), f"{name}: parameters must follow the setup cell"


def test_setup_cell_is_a_no_op_locally(monkeypatch, tmp_path):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(hosted.SETUP_CELL, "setup", "exec"), {})
    assert list(tmp_path.iterdir()) == [] and Path.cwd() == tmp_path


def test_repo_url_defined_once():
    hits = [p for p in list(ROOT.glob("rlhf_utils/*.py")) + list(ROOT.glob("notebooks/*.ipynb"))
            if f'"{hosted.REPO_URL}"' in p.read_text() and p.name != "hosted.py"]
    # Notebooks hold the generated setup cell (checked above to equal hosted.SETUP_CELL).
    assert all(p.suffix == ".ipynb" for p in hits)


def test_setup_cell_can_be_run_twice_on_a_hosted_kernel(monkeypatch, tmp_path):
    """One clone and one install, however often the cell runs; the kernel ends up in the
    notebooks folder with the repository importable once."""
    import subprocess
    import sys

    calls = []

    def fake_run(cmd, check):
        calls.append(cmd[:2] if cmd[0] == "git" else cmd[1:4])
        if cmd[0] == "git":
            (Path(cmd[-1]) / "notebooks").mkdir(parents=True)

    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        exec(compile(hosted.SETUP_CELL, "setup", "exec"), {})
    repo = tmp_path / "rlhf-workflow"
    assert calls == [["git", "clone"], ["-m", "pip", "install"]]
    assert Path.cwd() == repo / "notebooks" and sys.path.count(str(repo)) == 1


def test_runs_and_the_chosen_preset_persist_on_a_hosted_kernel(monkeypatch, tmp_path):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("RLHF_PRESET", raising=False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setattr(hosted, "KAGGLE_ROOT", tmp_path)
    assert hosted.where() == "kaggle" and hosted.persistent_run_dir("colab_t4") == str(tmp_path / "runs/colab_t4")
    assert hosted.resolve_run_dir("", "colab_t4") == tmp_path / "runs/colab_t4", "the runner writes where the notebooks do"
    assert hosted.default_preset() == "tiny"
    assert hosted.remember_preset("colab_t4") == tmp_path / "preset.txt"
    assert hosted.default_preset() == "colab_t4", "chosen in notebook 01, the default of the others"
    monkeypatch.setenv("RLHF_PRESET", "single_gpu")
    assert hosted.default_preset() == "single_gpu", "the environment wins"
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    monkeypatch.delenv("RLHF_PRESET")
    assert hosted.where() == "local" and hosted.persistent_run_dir("tiny") == ""
    assert hosted.default_preset() == "tiny" and hosted.remember_preset("paper") is None
    assert hosted.resolve_run_dir("", "tiny").name == "tiny" and hosted.resolve_run_dir("x/y", "tiny") == Path("x/y")


def test_the_runner_uses_the_persistent_run_dir(monkeypatch, tmp_path):
    from rlhf_utils import pipeline

    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setattr(hosted, "KAGGLE_ROOT", tmp_path)
    ran = []
    monkeypatch.setattr(pipeline, "execute_notebook", lambda source, output, params, progress: ran.append(params["run_dir"]))
    monkeypatch.setattr(pipeline, "write_manifest", lambda *a: None)
    pipeline.run_pipeline("tiny", notebooks=["01_sft.ipynb"], progress=False)
    assert ran == [str((tmp_path / "runs/tiny").resolve())]


def test_accelerate_configs_and_launch_command(tmp_path):
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert {"ddp", "zero2", "zero3", "fsdp"} <= names
    for path in CONFIG_DIR.glob("*.yaml"):
        assert "distributed_type" in yaml.safe_load(path.read_text())
    run = RunDir(tmp_path, load_config("tiny"))
    cmd = launch_command("dpo", run, iteration=2, config_file=CONFIG_DIR / "zero2.yaml", num_processes=8)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "8" and cmd[cmd.index("-m", 3) + 1] == "rlhf_utils.stage"
    assert cmd[-2:] == ["--iteration", "2"] and str(tmp_path / "config.yaml") in cmd
    assert launched("sft", run, tmp_path / "models/sft") is None, "no GPUs here: training stays in-process"
    RunDir.open(tmp_path / "paper", load_config("paper"))
    default = launch_command("dpo", RunDir(tmp_path / "paper"), iteration=1, num_processes=8)
    assert default[default.index("--config_file") + 1] == str(CONFIG_DIR / "zero2.yaml"), "the preset's choice"
    with pytest.raises(ConfigError, match="runtime.accelerate_config: 'zero4' is neither one of ddp, fsdp, zero2, zero3"):
        load_config("paper", {"runtime.accelerate_config": "zero4"})
    cpu = launch_command("sft", run, num_processes=2, cpu=True)
    assert cpu[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert "--multi_gpu" in cpu and "--config_file" not in cpu and cpu[cpu.index("--mixed_precision") + 1] == "no"
    assert launched("sft", RunDir(tmp_path, load_config("tiny", {"runtime.launch_processes": 1})), tmp_path) is None


def test_node_command_of_a_multi_node_launch():
    """Each node's command: all nodes' processes, this node's rank, node 0's address, the preset's DeepSpeed config,
    and the preset by name (no file that only an earlier run writes)."""
    from rlhf_utils.launch import node_command

    cmd = node_command("dpo", "paper", "/shared/runs/paper", ["dpo.beta=0.05"], 2, nodes=4, node_rank=3,
                       main_ip="10.0.0.1", main_port=29555, processes_per_node=8)
    flag = lambda name: cmd[cmd.index(name) + 1]  # noqa: E731
    assert flag("--num_processes") == "32" and flag("--num_machines") == "4" and flag("--machine_rank") == "3"
    assert flag("--main_process_ip") == "10.0.0.1" and flag("--main_process_port") == "29555"
    assert flag("--config_file") == str(CONFIG_DIR / "zero2.yaml")
    assert cmd[cmd.index("rlhf_utils.stage") + 1:] == [
        "dpo", "--preset", "paper", "--run-dir", "/shared/runs/paper", "--iteration", "2", "--set", "dpo.beta=0.05"]
    with pytest.raises(ConfigError, match="dpo.bta"):
        node_command("dpo", "paper", "r", ["dpo.bta=1"], 1, 2, 0, "h", 1, 8)


def test_hardware_plan_names_training_and_generation():
    from rlhf_utils.session import hardware_plan

    tiny = hardware_plan(load_config("tiny")).splitlines()
    assert tiny[0].startswith("training: 1 process(es); DPO global batch 32")
    assert tiny[1] == "generation: HF generate, up to 256 sequences per call, dynamic KV cache"
    paper = hardware_plan(load_config("paper", {"runtime.device": "cpu", "online.backend": "hf"}))
    assert paper.endswith("; 8 data-parallel shards on 8 launched processes")


def test_too_few_gpus_for_the_shards_fail_at_the_start(monkeypatch, tmp_path):
    from rlhf_utils import session

    import torch

    monkeypatch.setattr(session, "resolve_device", lambda cfg: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"online.data_parallel_size: 8 shard\(s\) x tensor_parallel_size 1 need 8 GPUs but only 1"):
        session.start("paper", str(tmp_path), {})
