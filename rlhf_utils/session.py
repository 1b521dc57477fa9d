"""What every notebook does first: load the configuration, open the run dir, set the runtime.

Usage (the first code cell after ``parameters``)::

    cfg, run, world = start(preset, run_dir, overrides)
"""

from __future__ import annotations

from typing import Any

from .artifacts import RunDir
from .config import Config, load_config
from .data import is_toy_world
from .models import apply_runtime, resolve_device, resolve_precision
from .world import ToyWorld


def start(preset: str, run_dir: str, overrides: dict[str, Any]) -> tuple[Config, RunDir, ToyWorld | None]:
    """Load and validate the config, open the run dir; the toy world comes back for the tiny recipe."""
    import datasets
    import transformers

    cfg = load_config(preset, overrides)
    apply_runtime(cfg)
    # Our own progress bars cover the long steps; the datasets library's fast map/save bars are noise here.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    run = RunDir.open(run_dir or None, cfg)
    world = ToyWorld.from_recipe(cfg.data.recipe) if is_toy_world(cfg) else None
    print(f"preset: {cfg.name} | device: {resolve_device(cfg)} | precision: {resolve_precision(cfg)} | seed: {cfg.runtime.seed}")
    print(f"run dir: {run.path}")
    return cfg, run, world
