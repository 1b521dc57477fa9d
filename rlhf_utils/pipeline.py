"""The pipeline runner: executes the notebooks in order with papermill.

Each notebook receives three parameters: ``preset``, ``run_dir`` and ``overrides`` (a dict
of dotted keys). papermill writes them into the notebook as Python literals, so a value is
always data, never code. The executed copies land in ``<run>/notebooks/``; each stage adds
its numbers to ``<run>/results.json``; the runner adds ``<run>/manifest.json``.

Adding a stage is one file in ``notebooks/`` and one line in :data:`NOTEBOOKS`.

Usage::

    results = run_pipeline("tiny", run_dir="runs/tiny", overrides={"runtime.seed": 1})
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .artifacts import REPO_ROOT, RunDir, atomic_write_json, default_run_dir, file_digest, stored_digest
from .config import Config, ConfigError, load_config
from .hosted import resolve_run_dir
from .notebook_outputs import clean_file
from .preflight import preflight
from .report import FIGURES as REPORT_FIGURES

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = [
    "01_sft.ipynb",
    "02_reward_model.ipynb",
    "03_preference_model.ipynb",
    "04_online_iterative_dpo.ipynb",
    "05_evaluation.ipynb",
    "06_ablations.ipynb",
]
PACKAGES = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "papermill", "vllm"]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def list_artifacts(run: RunDir) -> dict[str, dict[str, Any]]:
    """Every file under ``data/`` and ``models/`` with its size and sha256 (taken from each
    artifact's digest, written when it was finished, so large checkpoints are not read again)."""
    out = {}
    for sub in ("data", "models"):
        for art in sorted(p for p in (run / sub).glob("*") if p.is_dir() and not p.name.startswith(".")):
            recorded = stored_digest(art) or {}
            for path in sorted(art.rglob("*")):
                rel = str(path.relative_to(art))
                if path.is_file() and not any(part.startswith(".") for part in path.relative_to(run.path).parts):
                    sha = recorded[rel]["sha256"] if rel in recorded else file_digest(path)
                    out[str(path.relative_to(run.path))] = {"bytes": path.stat().st_size, "sha256": sha}
    return out


def write_manifest(run: RunDir, cfg: Config, preset: str, overrides: dict[str, Any], notebooks: list[str]) -> None:
    atomic_write_json(
        run / "manifest.json",
        {
            "preset": preset,
            "overrides": overrides,
            "seed": cfg.runtime.seed,
            "notebooks": notebooks,
            "packages": package_versions(),
            "git_commit": git_commit(),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
            "artifacts": list_artifacts(run),
        },
    )


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message is one paragraph, the trace is in ``output``."""

    def __init__(self, name: str, output: Path, cell: int | None, error: str):
        self.name, self.output = name, output
        where = f"at In [{cell}]" if cell is not None else "(its kernel died: out of memory, or killed)"
        super().__init__(f"notebook {name} failed {where}: {error}\nThe executed notebook, with the full trace, "
                         f"is {output}")


def execute_notebook(source: Path, output: Path, parameters: dict[str, Any] | None, progress: bool) -> None:
    """Run one notebook with papermill (kernel ``python3``: the interpreter of this environment).

    An error in a cell raises :class:`NotebookFailed` with the cell's number (as Jupyter shows
    it) and the error's own message; the full trace stays in ``output``."""
    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=parameters or None,
            kernel_name="python3",
            cwd=str(source.parent),
            progress_bar=progress,
            log_output=False,
        )
    except PapermillExecutionError as err:
        raise NotebookFailed(source.name, output, err.exec_count, f"{err.ename}: {err.evalue}") from None
    except DeadKernelError as err:  # the process is gone: no cell error to show
        raise NotebookFailed(source.name, output, None, str(err).strip().splitlines()[0]) from None


RUN_OUTPUTS = (
    "config.yaml", "results.json", "manifest.json", "report.md", *[f"{name}.png" for name in REPORT_FIGURES],
    "data", "models", "online", "eval", "exports", "notebooks", "ablations",
)


def clear_run_dir(path: Path) -> None:
    """Remove what an earlier run wrote (only the runner's own outputs; anything else is left alone)."""
    import shutil

    for name in RUN_OUTPUTS:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def notebooks_from(start: str) -> list[str]:
    """The notebooks from ``start`` on: ``"04"`` or ``"04_online_iterative_dpo.ipynb"``."""
    for i, name in enumerate(NOTEBOOKS):
        if name == start or name.split("_")[0] == start.zfill(2):
            return NOTEBOOKS[i:]
    raise ConfigError(f"--from: no notebook {start!r} (choose from {', '.join(n.split('_')[0] for n in NOTEBOOKS)})")


def run_pipeline(
    preset: str = "tiny",
    run_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    notebooks: list[str] | None = None,
    progress: bool = True,
    resume: bool = False,
    start_from: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Execute the notebooks in order into ``<run>/notebooks/``; return ``results.json``.

    The configuration is loaded and validated first, and every hub model and data source is
    opened (:func:`~rlhf_utils.preflight.preflight`), so a bad preset, override, recipe or hub id
    fails in seconds with a message naming it, before any notebook starts. Without ``run_dir``
    the run goes to Google Drive on Colab and ``/kaggle/working`` on Kaggle (where the notebooks
    put it too), else ``runs/<preset>``. A failing notebook raises :class:`NotebookFailed`.
    A fresh run from the first notebook clears what an earlier run left in the run dir. ``resume=True`` keeps it:
    every phase reuses the artifact it finds finished *with the same settings* (its
    fingerprint, ``rlhf_utils.fingerprints``) and redoes the others, so an interrupted run
    continues where it stopped and a changed knob redoes exactly what depends on it.
    ``start_from="04"`` (or ``notebooks`` not starting at 01) runs only those notebooks and
    never clears the run dir: the upstream stages they need are read from it. ``quiet`` drops
    the per-notebook progress lines (a sweep prints one line per variant instead).
    """
    overrides = dict(overrides or {})
    cfg = load_config(preset, overrides)
    target = resolve_run_dir(run_dir, cfg.name)
    names = notebooks_from(start_from) if start_from else (notebooks or NOTEBOOKS)
    for name in names:
        if not (NOTEBOOK_DIR / name).is_file():
            raise FileNotFoundError(f"notebook {name} is not in {NOTEBOOK_DIR}")
    preflight(cfg)
    if not resume and names[0] == NOTEBOOKS[0]:
        clear_run_dir(target)
    run = RunDir.open(target, cfg)
    params = {"preset": str(preset), "run_dir": str(run.path.resolve()), "overrides": overrides}
    for i, name in enumerate(names, 1):
        if not quiet:
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
        start = time.time()
        execute_notebook(NOTEBOOK_DIR / name, run / f"notebooks/{name}", params, progress)
        if not quiet:
            print(f"[{i}/{len(names)}] {name} done in {time.time() - start:.1f}s", flush=True)
    write_manifest(run, cfg, str(preset), overrides, names)
    return run.results()


def refresh_notebooks(notebooks: list[str] | None = None, progress: bool = True) -> None:
    """Re-execute the committed notebooks in place with their defaults (the tiny preset)."""
    clear_run_dir(default_run_dir("tiny"))
    for name in notebooks or NOTEBOOKS:
        path = NOTEBOOK_DIR / name
        print(f"refreshing {name} ...", flush=True)
        execute_notebook(path, path, None, progress)
        strip_run_metadata(path)
        clean_file(path, REPO_ROOT)


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's per-cell timings and any widget state, which only add diff noise."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
