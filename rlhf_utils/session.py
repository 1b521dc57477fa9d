"""What every notebook does first: load the configuration, open the run dir, set the runtime.

Usage (the first code cell after ``parameters``)::

    cfg, run, world = start(preset, run_dir, overrides)
"""

from __future__ import annotations

import os
from typing import Any

from .artifacts import RunDir, display_path
from .config import Config, load_config
from .data import is_toy_world
from .generation import check_generation_gpus, data_parallel_size, generation_processes, uses_vllm
from .hosted import remember_preset, resolve_run_dir
from .launch import inside_launch, training_processes
from .models import apply_runtime, resolve_device, resolve_precision
from .world import ToyWorld


def hardware_plan(cfg: Config) -> str:
    """How training and generation will use the hardware: processes, batch arithmetic, memory
    savers; the sampling backend and its shards. Two lines."""
    from .trainers import accumulation_steps

    procs = int(os.environ["WORLD_SIZE"]) if inside_launch() else training_processes(cfg)
    d = cfg.dpo
    accum = accumulation_steps(d, procs)
    lora = cfg.models.lora
    adapters = ("QLoRA (4-bit base)" if lora.load_in_4bit else f"LoRA r={lora.r}") if lora.enabled else "full fine-tuning"
    o = cfg.online
    if uses_vllm(cfg):
        backend = f"vLLM, tensor parallel {o.tensor_parallel_size}, at most {o.vllm_gpu_memory_utilization:.0%} of a GPU"
    else:
        backend = f"HF generate, up to {o.generation_batch_size} sequences per call, {o.cache_implementation} KV cache"
    dp = data_parallel_size(cfg)
    shards = f"; {dp} data-parallel shards on {generation_processes(cfg)} launched processes" if dp > 1 else ""
    launcher = f" ({cfg.runtime.accelerate_config})" if procs > 1 else ""
    return (f"training: {procs} process(es){launcher}; DPO global batch {d.global_batch_size} = {d.per_device_batch_size} per device "
            f"x {accum} accumulation x {procs}; gradient checkpointing {'on' if cfg.runtime.gradient_checkpointing else 'off'}; "
            f"{adapters}\ngeneration: {backend}{shards}")


def start(preset: str, run_dir: str, overrides: dict[str, Any]) -> tuple[Config, RunDir, ToyWorld | None]:
    """Load and validate the config, open the run dir; the toy world comes back for the tiny recipe."""
    import datasets
    import transformers

    cfg = load_config(preset, overrides)
    if resolve_device(cfg) == "cuda":  # fail in notebook 01, not in 04
        check_generation_gpus(cfg)
    apply_runtime(cfg)
    # Our own progress bars cover the long steps; the datasets library's fast map/save bars are noise here.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    run = RunDir.open(resolve_run_dir(run_dir, cfg.name), cfg)
    saved = remember_preset(preset)
    world = ToyWorld.from_recipe(cfg.data.recipe) if is_toy_world(cfg) else None
    print(f"preset: {cfg.name} | device: {resolve_device(cfg)} | precision: {resolve_precision(cfg)} | seed: {cfg.runtime.seed}")
    print(f"run dir: {display_path(run.path)}")
    if saved:
        print(f"the notebooks that follow default to preset {preset!r} ({saved})")
    print(hardware_plan(cfg))
    return cfg, run, world
