"""rlhf_utils: the helper package behind the RLHF Workflow notebooks.

Modules, one concept each: ``config`` (presets), ``world`` (the toy task and its gold
reward), ``data`` (datasets), ``recipes`` (hub mixtures), ``models`` (tokenizers and
models), ``generation`` (sampling), ``training`` (TRL trainers), ``evaluation``,
``artifacts`` (the run dir), ``pipeline`` (papermill runner), ``cli``.
"""

import logging
import warnings

__version__ = "0.1.0"

# tqdm.auto asks for ipywidgets inside Jupyter; we keep notebooks free of widget state and
# fall back to text progress bars on purpose.
warnings.filterwarnings("ignore", message="IProgress not found")
# TRL 1.16 still calls transformers' deprecated `is_gradient_checkpointing`; nothing for users to act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
# bitsandbytes (QLoRA) warns at import on CPUs with AVX512-BF16 that an optional faster CPU
# kernel package is missing; 4-bit layers only run on the CPU in our tests, where speed is moot.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
