"""Running the notebooks on Colab or Kaggle: the first cell of every notebook, the preset chosen
once for all of them, and where runs persist.

The repository URL is defined here, once. :data:`SETUP_CELL` is the source of every notebook's
first code cell (a test checks that each notebook carries it verbatim): on Colab or Kaggle it
clones the repository to ``~/rlhf-workflow`` and installs the package with the ``hosted`` extra
(bitsandbytes for QLoRA; not vLLM or DeepSpeed, whose wheels would replace the runtime's own CUDA
torch), each only once, so re-running the cell is safe; on a local kernel it does nothing.

Every notebook's ``parameters`` cell defaults to :func:`default_preset`: ``$RLHF_PRESET``, else
(on Colab or Kaggle) the preset the last notebook ran with, saved next to the runs, else ``tiny``.

Usage (inside a notebook)::

    from rlhf_utils.hosted import default_preset, resolve_run_dir
    preset = default_preset()
    path = resolve_run_dir(run_dir, cfg.name)   # Drive on Colab, /kaggle/working on Kaggle, else runs/<preset>
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_URL = "https://github.com/rlhf-workflow/rlhf-workflow"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

KAGGLE_ROOT = Path("/kaggle/working")
COLAB_DRIVE = Path("/content/drive")

SETUP_CELL = f'''# On Colab or Kaggle: fetch the repository and install it, once (re-running this cell is safe). Locally: nothing.
import os, subprocess, sys
HOSTED = "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if HOSTED:
    REPO = os.path.expanduser("~/rlhf-workflow")
    if not os.path.isdir(REPO):
        subprocess.run(["git", "clone", "--depth", "1", "{REPO_URL}", REPO], check=True)
    if not os.path.exists(os.path.join(REPO, ".installed")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", REPO + "[hosted]"], check=True)
        open(os.path.join(REPO, ".installed"), "w").close()
    os.chdir(os.path.join(REPO, "notebooks"))
    if REPO not in sys.path:
        sys.path.insert(0, REPO)'''


def where() -> str:
    """``colab``, ``kaggle`` or ``local``."""
    if "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


def persistent_root() -> Path | None:
    """Where a hosted session keeps what must survive a disconnect: ``MyDrive/rlhf-workflow`` on
    Colab (mounting Google Drive), ``/kaggle/working`` on Kaggle; ``None`` locally."""
    host = where()
    if host == "colab":
        from google.colab import drive  # type: ignore[import-not-found]

        if not (COLAB_DRIVE / "MyDrive").is_dir():
            drive.mount(str(COLAB_DRIVE))
        return COLAB_DRIVE / "MyDrive/rlhf-workflow"
    if host == "kaggle":
        return KAGGLE_ROOT
    return None


def persistent_run_dir(preset: str) -> str:
    """A run dir that survives a disconnect (``<persistent root>/runs/<preset>``); empty locally.
    Combine with ``rlhf-workflow run --resume``."""
    root = persistent_root()
    return str(root / "runs" / Path(preset).stem) if root else ""


def resolve_run_dir(run_dir: str | Path | None, name: str) -> Path:
    """The run dir a notebook or the runner uses: ``run_dir`` when given, else the persistent one on
    Colab and Kaggle, else ``runs/<name>`` (under ``$RLHF_RUNS_DIR`` when set)."""
    from .artifacts import default_run_dir

    return Path(run_dir or persistent_run_dir(name) or default_run_dir(name))


def default_preset() -> str:
    """The preset of a notebook that is not told one: ``$RLHF_PRESET``; else, on Colab or Kaggle,
    the preset the last notebook ran with (:func:`remember_preset`); else ``tiny``."""
    if os.environ.get("RLHF_PRESET"):
        return os.environ["RLHF_PRESET"]
    root = persistent_root()
    saved = root / "preset.txt" if root else None
    return saved.read_text().strip() if saved and saved.is_file() and saved.read_text().strip() else "tiny"


def remember_preset(preset: str) -> Path | None:
    """On Colab or Kaggle, save ``preset`` as the default of the notebooks that follow (one choice
    for the whole recipe); return the file written, or ``None`` locally."""
    root = persistent_root()
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "preset.txt.tmp"
    tmp.write_text(f"{preset}\n")
    tmp.replace(root / "preset.txt")
    return root / "preset.txt"
