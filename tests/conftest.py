"""Shared fixtures. The tiny pipeline runs once per session; every test that needs its
artifacts reads the same run directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rlhf_utils.config import load_config


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("tiny")


# Planted in the environment of every run the suite makes (nbval's kernels included, since this
# hook runs before any notebook starts); no file a run writes may contain them.
FAKE_SECRETS = {"HF_TOKEN": "hf_FAKEtoken0123456789abcdef", "WANDB_API_KEY": "wandb_FAKE_0123456789abcdef"}


def pytest_configure(config):
    os.environ.update(FAKE_SECRETS)


def deterministic_numbers(results):
    """Every measured number of a run, without wall times and rates derived from them."""
    if isinstance(results, dict):
        return {k: deterministic_numbers(v) for k, v in results.items()
                if k not in {"timings", "time_share", "throughput"} and "seconds" not in k}
    if isinstance(results, list):
        return [deterministic_numbers(v) for v in results]
    return results


def nbval_run_dir() -> Path | None:
    """The run nbval's execution of the committed notebooks leaves under ``make test`` (it runs
    first, from an empty ``$RLHF_RUNS_DIR``), when it finished; ``None`` otherwise."""
    from rlhf_utils.artifacts import RUNS_ENV

    path = Path(os.environ.get(RUNS_ENV) or "/nonexistent") / "tiny"
    return path if (path / "results.json").is_file() else None


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end papermill run of the tiny preset: (run_dir, results).

    Under ``make test`` it resumes a copy of nbval's run: the runner executes every notebook
    again, and each phase reuses the artifact nbval trained with the same settings (about 80 s
    instead of 8 min). Run on its own, it trains everything itself. Tests that need a second,
    independent computation (``test_same_seed_same_numbers``, the crash tests) make it."""
    from rlhf_utils.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    earlier = nbval_run_dir()
    if earlier:
        shutil.copytree(earlier, run_dir)
    results = run_pipeline("tiny", run_dir, progress=False, resume=earlier is not None)
    return run_dir, results
