"""Shared fixtures. The tiny pipeline runs once per session; every test that needs its
artifacts reads the same run directory."""

from __future__ import annotations

import pytest

from rlhf_utils.config import load_config


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end papermill run of the tiny preset: (run_dir, results)."""
    from rlhf_utils.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("tiny_run")
    results = run_pipeline("tiny", run_dir, progress=False)
    return run_dir, results
