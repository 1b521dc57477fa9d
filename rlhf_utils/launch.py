"""Training on several GPUs from a notebook: ``accelerate launch`` in a subprocess, streamed back.

With more than one GPU visible, a notebook's training step runs as::

    accelerate launch --config_file <config> --num_processes <gpus> -m rlhf_utils.stage <stage> \
        --preset <run>/config.yaml --run-dir <run> [--iteration t]

where ``<config>`` is the preset's ``runtime.accelerate_config`` (DDP; the ``paper`` preset
DeepSpeed ZeRO-2, as the paper trained DPO).

The resolved ``config.yaml`` of the run dir carries every override, so the launched processes
see exactly the notebook's configuration. With one GPU or none, training stays in-process.

Usage::

    log = launched("sft", run, out) or train_sft(cfg, init, splits["sft"], out, stamp=run.stamp("sft"))
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from .artifacts import RunDir
from .config import accelerate_config_path


def inside_launch() -> bool:
    """True in a process started by ``accelerate launch`` (or torchrun)."""
    return "LOCAL_RANK" in os.environ


def accelerate_launcher(num_processes: int, config_file: str | Path | None = None, nodes: int = 1, node_rank: int = 0,
                        main_ip: str = "127.0.0.1", main_port: int | None = None) -> list[str]:
    """``accelerate launch`` with ``num_processes`` processes in all, over ``nodes`` machines, as an argv prefix.

    With a ``config_file`` (DDP, DeepSpeed, FSDP: ``rlhf_utils/accelerate_configs``) the config
    decides the rest. Without one: plain data parallelism, ``--multi_gpu`` in fp32. ``--multi_gpu``
    is what makes accelerate 1.15 start the processes itself (with torch's elastic launcher), also
    on a machine without GPUs, where ``PartialState(cpu=True)`` joins them into a gloo MULTI_CPU
    group; ``--cpu`` would start only one unless mpirun is installed. Over several nodes every
    node runs the same command with its own ``node_rank``; node 0 listens at ``main_ip:main_port``
    (default 29500; on one node, accelerate's default port unless ``main_port`` is given).
    """
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if config_file is not None:
        launcher += ["--config_file", str(config_file)]
    else:
        launcher += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--num_machines", str(nodes)]
    if nodes > 1:
        launcher += ["--machine_rank", str(node_rank), "--main_process_ip", main_ip]
    if nodes > 1 or main_port is not None:
        launcher += ["--main_process_port", str(main_port or 29500)]
    return launcher


def free_port() -> int:
    """A TCP port nothing listens on now: a rendezvous of its own for a launch started while another
    group (a training launch, say) may hold accelerate's default port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def training_processes(cfg) -> int:
    """Processes a notebook trains each stage on: ``runtime.launch_processes``, else one per visible GPU."""
    from .models import resolve_device

    return cfg.runtime.launch_processes or (torch.cuda.device_count() if resolve_device(cfg) == "cuda" else 1)


def launch_command(
    stage: str, run: RunDir, iteration: int | None = None, config_file: str | Path | None = None,
    num_processes: int | None = None, cpu: bool = False,
) -> list[str]:
    """The command that trains ``stage`` on ``num_processes`` processes (default: one per GPU).

    ``config_file`` defaults to the run's ``runtime.accelerate_config``; ``cpu=True`` (tests,
    CPU-only machines) launches without one (see :func:`accelerate_launcher`).
    """
    if config_file is None and not cpu:  # the run's own choice (runtime.accelerate_config in its config.yaml)
        import yaml

        config_file = accelerate_config_path(yaml.safe_load((run / "config.yaml").read_text())["runtime"]["accelerate_config"])
    launcher = accelerate_launcher(num_processes or torch.cuda.device_count(), None if cpu else config_file)
    cmd = [*launcher, "-m", "rlhf_utils.stage", stage, "--preset", str(run / "config.yaml"), "--run-dir", str(run.path)]
    return cmd + (["--iteration", str(iteration)] if iteration is not None else [])


def node_command(stage: str, preset: str, run_dir: str | Path, sets: list[str], iteration: int, nodes: int,
                 node_rank: int, main_ip: str, main_port: int | None, processes_per_node: int, cpu: bool = False) -> list[str]:
    """One node's command to train ``stage`` on ``nodes`` x ``processes_per_node`` processes.

    Every node runs it (with its own ``node_rank``) against one run dir on a shared filesystem;
    the configuration comes from the preset and ``sets`` (``KEY=VALUE``), with the preset's
    ``runtime.accelerate_config`` (the ``paper`` preset: DeepSpeed ZeRO-2) unless ``cpu``. Usage::

        node_command("dpo", "paper", "/shared/runs/paper", [], 1, nodes=2, node_rank=0,
                     main_ip="10.0.0.1", main_port=29500, processes_per_node=8)
    """
    from .config import load_config, parse_override

    cfg = load_config(preset, dict(parse_override(s) for s in sets))  # a bad key fails here, on every node
    config_file = None if cpu else accelerate_config_path(cfg.runtime.accelerate_config)
    launcher = accelerate_launcher(nodes * processes_per_node, config_file, nodes, node_rank, main_ip, main_port)
    extra = [arg for s in sets for arg in ("--set", s)]
    return [*launcher, "-m", "rlhf_utils.stage", stage, "--preset", str(preset), "--run-dir", str(run_dir),
            "--iteration", str(iteration), *extra]


def stream(cmd: list[str], echo: bool = True, keep: int = 40) -> tuple[int, str]:
    """Run ``cmd``, printing its output as it comes (when ``echo``); its exit code and last ``keep`` lines."""
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            tail = [*tail[-keep + 1 :], line.rstrip()]
            if echo:
                print(line, end="", flush=True)
    return proc.returncode, "\n".join(tail)


def launch(stage: str, run: RunDir, iteration: int | None = None, config_file: str | Path | None = None,
           num_processes: int | None = None, cpu: bool = False) -> None:
    """Run one training stage on several processes, printing its output as it comes."""
    cmd = launch_command(stage, run, iteration, config_file, num_processes, cpu)
    print("launching:", " ".join(cmd), flush=True)
    code, _ = stream(cmd)
    if code:
        raise RuntimeError(f"accelerate launch {stage} failed with exit code {code}")


def launched(stage: str, run: RunDir, output_dir: str | Path, iteration: int | None = None):
    """Train ``stage`` on :func:`training_processes` processes when they are several (all visible
    GPUs, or ``runtime.launch_processes``), and return its TrainLog; None (train in-process) with
    one process, or when already inside a launched process."""
    from .models import resolve_device
    from .trainers import reuse

    processes = training_processes(run.cfg)
    if processes < 2 or inside_launch():
        return None
    launch(stage, run, iteration, num_processes=processes, cpu=resolve_device(run.cfg) == "cpu")
    return reuse(output_dir, run.stamp(stage_phase(stage, iteration)))


def stage_phase(stage: str, iteration: int | None = None) -> str:
    """The fingerprint phase (``rlhf_utils.fingerprints``) a training stage's checkpoint is saved under."""
    return f"policy:{iteration}" if stage == "dpo" else stage
