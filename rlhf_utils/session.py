"""What every notebook does first: load the configuration, open the run dir, set the runtime.

Usage (the first code cell after ``parameters``)::

    cfg, run, world = start(preset, run_dir, overrides)
"""

from __future__ import annotations

from typing import Any

from .artifacts import RunDir
from .config import Config, load_config
from .data import is_toy_world
from .hosted import persistent_run_dir
from .models import apply_runtime, resolve_device, resolve_precision
from .world import ToyWorld


def hardware_plan(cfg: Config) -> str:
    """One line saying how training will use the hardware: processes, batch arithmetic, memory savers."""
    import torch

    from .training import accumulation_steps

    procs = max(1, torch.cuda.device_count()) if resolve_device(cfg) == "cuda" else 1
    d = cfg.dpo
    accum = accumulation_steps(d, procs)
    lora = cfg.models.lora
    adapters = ("QLoRA (4-bit base)" if lora.load_in_4bit else f"LoRA r={lora.r}") if lora.enabled else "full fine-tuning"
    return (f"training: {procs} process(es); DPO global batch {d.global_batch_size} = {d.per_device_batch_size} per device "
            f"x {accum} accumulation x {procs}; gradient checkpointing {'on' if cfg.runtime.gradient_checkpointing else 'off'}; "
            f"{adapters}")


def start(preset: str, run_dir: str, overrides: dict[str, Any]) -> tuple[Config, RunDir, ToyWorld | None]:
    """Load and validate the config, open the run dir; the toy world comes back for the tiny recipe."""
    import datasets
    import transformers

    cfg = load_config(preset, overrides)
    apply_runtime(cfg)
    # Our own progress bars cover the long steps; the datasets library's fast map/save bars are noise here.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    run = RunDir.open(run_dir or persistent_run_dir(cfg.name) or None, cfg)
    world = ToyWorld.from_recipe(cfg.data.recipe) if is_toy_world(cfg) else None
    print(f"preset: {cfg.name} | device: {resolve_device(cfg)} | precision: {resolve_precision(cfg)} | seed: {cfg.runtime.seed}")
    print(f"run dir: {run.path}")
    print(hardware_plan(cfg))
    return cfg, run, world
