"""The run directory: atomic writes, ``results.json`` and the artifacts each stage leaves.

Layout of ``runs/<preset>/``::

    config.yaml          the resolved configuration (preset + overrides)
    results.json         every stage adds its numbers under its own key
    manifest.json        written by the runner: versions, git commit, artifacts
    data/<split>/        datasets (save_to_disk)
    models/<name>/       safetensors checkpoints with their tokenizer
    notebooks/           the executed notebooks (runner only)

Everything is written to a temporary name and renamed into place, so an interrupted run
never leaves a half-written file that a later stage would trust.

Usage::

    run = RunDir.open("", cfg)                    # default: <repo>/runs/<preset>
    run.update_results("sft", {"gold_reward": 0.61})
    sft_dir = run.require("models/sft", "01_sft.ipynb")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


DIGEST = ".digest.json"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _derived(f: Path) -> bool:
    """Files that are not part of an artifact: the digest itself, and the ``cache-*.arrow`` files
    the datasets library writes beside a dataset loaded from disk whenever it is mapped."""
    return f.name == DIGEST or (f.name.startswith("cache-") and f.suffix == ".arrow")


def dir_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` that belongs to the artifact."""
    return {str(f.relative_to(path)): file_digest(f) for f in sorted(path.rglob("*")) if f.is_file() and not _derived(f)}


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it gets a content digest and replaces
    ``path`` in one rename, so ``path`` is either absent or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        (tmp / DIGEST).write_text(json.dumps(dir_digest(tmp), indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_complete(path: str | Path) -> bool:
    """True when ``path`` was finished by :func:`atomic_dir` and its files still match their digest.

    A directory that fails the check (a file truncated, edited or missing) is removed, so the
    phase that writes it runs again instead of trusting it.
    """
    path = Path(path)
    digest = path / DIGEST
    if not digest.is_file():
        return False
    try:
        ok = json.loads(digest.read_text()) == dir_digest(path)
    except (OSError, ValueError):
        ok = False
    if not ok:
        print(f"{path}: contents do not match the digest written when it was finished; redoing that phase")
        shutil.rmtree(path, ignore_errors=True)
    return ok


def read_json(path: str | Path) -> Any | None:
    """A JSON file written by :func:`atomic_write_json`, or None when it is absent or unreadable (then redone)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        print(f"{path}: unreadable; redoing the phase that writes it")
        path.unlink(missing_ok=True)
        return None


CRASH_ENV = "RLHF_WORKFLOW_CRASH_AT"


def crash_point(name: str) -> None:
    """Fault injection for the resume tests: SIGKILL this process, with no chance to clean up,
    when the environment variable ``RLHF_WORKFLOW_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def default_run_dir(preset: str) -> Path:
    return REPO_ROOT / "runs" / Path(preset).stem


class RunDir:
    """A run's directory and the results it has gathered so far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path | None, cfg: Any) -> "RunDir":
        """Open (creating if needed) the run dir and record the resolved config in it."""
        run = cls(Path(path) if path else default_run_dir(cfg.name))
        run.path.mkdir(parents=True, exist_ok=True)
        # Temporary dirs and files of a process killed mid-write: never trusted, so removed
        # (by the first process only: under `accelerate launch` the others may be writing).
        stale_temps = sorted(run.path.rglob(".*.tmp"), reverse=True) if os.environ.get("LOCAL_RANK", "0") == "0" else []
        for stale in stale_temps:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        atomic_write_text(run.path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return run

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def results(self) -> dict[str, Any]:
        if not self.results_path.exists():
            return {}
        return json.loads(self.results_path.read_text())

    def update_results(self, stage: str, values: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
        """Merge ``values`` under ``results[stage]`` (and the stage's wall time under ``timings``)."""
        results = self.results()
        results[stage] = values
        if seconds is not None:
            results.setdefault("timings", {})[stage] = round(seconds, 2)
        atomic_write_json(self.results_path, results)
        return results

    def require(self, relative: str, notebook: str) -> Path:
        """The path of an earlier stage's artifact, or a clear error naming the notebook to run first."""
        path = self.path / relative
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: run notebooks/{notebook} first (or `rlhf-workflow run`) with the same run_dir"
            )
        return path
