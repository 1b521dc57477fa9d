"""Shared fixtures. The tiny pipeline runs once per session; every test that needs its
artifacts reads the same run directory."""

from __future__ import annotations

import pytest

from rlhf_utils.config import load_config


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("tiny")


# Planted in the environment of the shared run; no file the run writes may contain them.
FAKE_SECRETS = {"HF_TOKEN": "hf_FAKEtoken0123456789abcdef", "WANDB_API_KEY": "wandb_FAKE_0123456789abcdef"}


def deterministic_numbers(results):
    """Every measured number of a run, without wall times and rates derived from them."""
    if isinstance(results, dict):
        return {k: deterministic_numbers(v) for k, v in results.items()
                if k not in {"timings", "time_share", "throughput"} and "seconds" not in k}
    if isinstance(results, list):
        return [deterministic_numbers(v) for v in results]
    return results


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end papermill run of the tiny preset: (run_dir, results)."""
    from rlhf_utils.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAKE_SECRETS.items():
            mp.setenv(key, value)
        results = run_pipeline("tiny", run_dir, progress=False)
    return run_dir, results
