"""Running the notebooks on Colab or Kaggle: the first cell of every notebook, and where runs persist.

The repository URL is defined here, once. :data:`SETUP_CELL` is the source of every notebook's
first code cell (a test checks that each notebook carries it verbatim): on Colab or Kaggle it
clones the repository and installs the package with the ``hosted`` extra (bitsandbytes for QLoRA;
not vLLM or DeepSpeed, whose wheels would replace the runtime's own CUDA torch); on a local
kernel it does nothing.

Usage (inside a notebook)::

    from rlhf_utils.hosted import persistent_run_dir
    run_dir = run_dir or persistent_run_dir(preset)   # Drive on Colab, /kaggle/working on Kaggle
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_URL = "https://github.com/rlhf-workflow/rlhf-workflow"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

SETUP_CELL = f'''# On Colab or Kaggle: fetch the repository and install it with the hosted extras. Locally: nothing to do.
import os, subprocess, sys
HOSTED = "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if HOSTED and not os.path.isdir("rlhf-workflow"):
    subprocess.run(["git", "clone", "--depth", "1", "{REPO_URL}", "rlhf-workflow"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "rlhf-workflow[hosted]"], check=True)
if HOSTED:
    os.chdir("rlhf-workflow/notebooks")
    sys.path.insert(0, os.path.abspath(".."))'''


def where() -> str:
    """``colab``, ``kaggle`` or ``local``."""
    if "COLAB_RELEASE_TAG" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


def persistent_run_dir(preset: str) -> str:
    """A run dir that survives a disconnect: Google Drive on Colab, /kaggle/working on Kaggle;
    empty (the default ``runs/<preset>``) locally. Combine with ``rlhf-workflow run --resume``."""
    host = where()
    if host == "colab":
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount("/content/drive")
        return str(Path("/content/drive/MyDrive/rlhf-workflow/runs") / preset)
    if host == "kaggle":
        return str(Path("/kaggle/working/runs") / preset)
    return ""

