"""rlhf_utils: the helper package behind the RLHF Workflow notebooks.

Modules, one concept each: ``config`` (paper defaults, presets as diffs), ``world`` (the toy
task and its gold reward), ``data`` and ``recipes`` (datasets, hub mixtures), ``models``
(tokenizers and models), ``trainers`` (TRL trainers), ``generation`` (sampling backends),
``scoring`` (the judges), ``pairs`` (pair rules), ``online`` (the iterative DPO loop),
``evaluation`` (the one evaluation protocol), ``report``, ``fingerprints`` (what each
artifact depends on), ``artifacts`` (the run dir), ``seeds``, ``stage`` (module entry
points), ``pipeline`` and ``cli`` (the runner).
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
