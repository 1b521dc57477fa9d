"""The multi-process path: two CPU processes under `accelerate launch` against one process.

`accelerate launch --num_processes 2 --cpu` starts a single process in accelerate 1.15 unless
mpirun is installed, so the CPU launch is `accelerate launch --multi_gpu --num_processes 2`
(see `rlhf_utils.launch.launch_command`): accelerate starts both processes itself and, on a
machine without GPUs, its state sees a gloo MULTI_CPU group (checked below).

SFT, the reward model and DPO are trained on a reduced tiny configuration twice: in one
process (per-device batch 16, gradient accumulation 2) and under accelerate with two CPU
processes (per-device batch 16 each, no accumulation): the same global batch of 32. The
runs are not bit-identical (gradients are reduced across processes in another order and
each process draws its own dropout-free shard), so we state a tolerance: the mean training
loss of each stage must agree within 5% relative.
"""

import json
import subprocess
import sys

import pytest

from rlhf_utils.artifacts import RunDir
from rlhf_utils.config import load_config
from rlhf_utils.launch import launch

pytestmark = pytest.mark.e2e

SMALL = {
    "world.n_sft_prompts": 512, "world.n_pref_prompts": 256, "world.n_iteration_prompts": 64, "world.n_eval_prompts": 32,
    "sft.epochs": 1, "reward_model.epochs": 1, "dpo.epochs": 1, "online.iterations": 1, "online.k": 4,
    "sft.per_device_batch_size": 16, "reward_model.per_device_batch_size": 16, "dpo.per_device_batch_size": 16,
    "runtime.num_threads": 1,
}
STAGES = [("sft", "models/sft"), ("reward_model", "models/reward_model"), ("dpo", "models/iter_1")]
TOLERANCE = 0.05


def _mean_loss(run_dir, model_dir):
    history = json.loads((run_dir / model_dir / "train_log.json").read_text())["history"]
    losses = [h["loss"] for h in history if "loss" in h]
    return sum(losses) / len(losses)


def test_two_processes_match_one(tmp_path, capsys):
    cfg = load_config("tiny", SMALL)
    single, double = RunDir.open(tmp_path / "one", cfg), RunDir.open(tmp_path / "two", cfg)
    for stage, _ in STAGES:
        args = [sys.executable, "-m", "rlhf_utils.stage", stage, "--preset", str(single / "config.yaml"),
                "--run-dir", str(single.path), "--iteration", "1"]
        subprocess.run(args, check=True, capture_output=True)
        launch(stage, double, iteration=1, num_processes=2, cpu=True)
    out = capsys.readouterr().out
    assert out.count("2 process(es), DistributedType.MULTI_CPU") == len(STAGES), out[-2000:]
    # DPO precomputes its reference log-probs under two processes too (one on-disk cache both read).
    assert "Computing reference log probs for train dataset" in out, out[-3000:]
    history = json.loads((double / "models/sft/train_log.json").read_text())["history"]
    single_history = json.loads((single / "models/sft/train_log.json").read_text())["history"]
    assert len(history) == len(single_history), "same number of optimizer steps"
    for stage, model_dir in STAGES:
        a, b = _mean_loss(single.path, model_dir), _mean_loss(double.path, model_dir)
        print(f"{stage}: mean loss {a:.4f} (1 process) vs {b:.4f} (2 processes), relative gap {abs(a - b) / abs(a):.2%}")
        assert abs(a - b) <= TOLERANCE * abs(a), f"{stage}: mean loss {a:.4f} (1 process) vs {b:.4f} (2 processes)"


def test_two_nodes_train_one_stage(tmp_path):
    """`rlhf-workflow launch` on two "nodes" of one CPU process each, on this machine: they meet at node 0's
    address and train SFT as one group of two (the multi-node path, as far as one machine can test it)."""
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    cmd = [sys.executable, "-m", "rlhf_utils.cli", "launch", "sft", "--preset", "tiny", "--run-dir", str(tmp_path / "run"),
           "--nodes", "2", "--main-port", "29531", "--processes-per-node", "1", "--cpu", *sets]
    nodes = [subprocess.Popen([*cmd, "--node-rank", str(rank)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "--num_machines 2 --machine_rank 1" in outs[1]
    assert "sft: 2 process(es), DistributedType.MULTI_CPU" in outs[0], outs[0][-2000:]
    history = json.loads((tmp_path / "run/models/sft/train_log.json").read_text())["history"]
    steps = max(h.get("step", 0) for h in history)
    assert steps == SMALL["world.n_sft_prompts"] // (2 * SMALL["sft.per_device_batch_size"]), "a global batch of two processes"


def test_a_notebook_launches_its_own_training(tmp_path):
    """The front door of a multi-GPU node (`make run PRESET=paper`): the runner executes notebook 01, whose
    training cell launches SFT on `runtime.launch_processes` processes (on this machine: two gloo processes; on
    8 GPUs: one per GPU with the preset's DeepSpeed config) and reads back the launched run's model."""
    from rlhf_utils.pipeline import run_pipeline

    run_dir = tmp_path / "run"
    run_pipeline("tiny", run_dir, {**SMALL, "runtime.launch_processes": 2}, notebooks=["01_sft.ipynb"], progress=False)
    executed = (run_dir / "notebooks/01_sft.ipynb").read_text()
    assert "launching: " in executed and "sft: 2 process(es), DistributedType.MULTI_CPU" in executed
    assert "training: 2 process(es)" in executed, "the hardware plan counts the launched processes"
    assert json.loads((run_dir / "results.json").read_text())["sft"], "the notebook went on with the launched model"
