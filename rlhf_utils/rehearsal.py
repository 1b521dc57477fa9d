"""The rehearsal of the hub path: every notebook, through the runner, with the ``colab_t4``
preset's structure on the mini hub (``rlhf_utils.mini_hub``), on the CPU, offline.

What it runs is ``colab_t4`` as it is (LoRA on every stage, gradient accumulation, its K, its
iteration count and pair rule, the hub branch of every notebook, streamed hub-schema data, the
ChatML template, the benchmark answer files); only the model ids and the recipe point at the mini hub, and the
sequence lengths are cut to CPU size. What it cannot prove: real weights (the mini model learns
nothing worth measuring), CUDA, bf16/fp16, vLLM, several GPUs.

Usage::

    rlhf-workflow rehearse                   # or: make rehearsal  -> runs/rehearsal
    results = rehearse("runs/rehearsal")     # raises RehearsalError if a hub-path result is missing
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .artifacts import default_run_dir
from .benchmarks import load_benchmarks
from .config import load_config
from .mini_hub import MODEL, RECIPE, build_mini_hub
from .pipeline import NOTEBOOKS, run_pipeline
from .report import model_names

PRESET = "colab_t4"
BLOCKS = ("sft", "reward_model", "preference_model", "online_dpo", "offline_dpo", "evaluation", "ablations")
# Results only a gold reward can give (the toy world's): a hub run has none of these keys.
GOLD_KEY = re.compile(r"gold|(?<!rm_)win_rate_vs_sft|lc_|annotator|teacher|random_init|oracle|picked|spearman|"
                      r"gain_ratio|offline_win_rate|online_minus_offline|effect\.|by_category\.")


class RehearsalError(RuntimeError):
    """The rehearsal finished without a result the hub path must give."""


def rehearsal_overrides(hub: str | Path) -> dict[str, Any]:
    """``colab_t4`` with the model ids and the recipe pointed at the mini hub and the sequence
    lengths cut to CPU size; nothing else changes."""
    hub = Path(hub).resolve()
    model = str(hub / MODEL)
    return {
        "models.policy": model, "models.reward_model": model, "models.preference_model": model,
        "data.recipe": str(hub / RECIPE),
        "data.max_prompt_length": 96,
        "sft.max_length": 192, "reward_model.max_length": 192, "preference_model.max_length": 256,
        "dpo.max_length": 160, "dpo.max_prompt_length": 96,
        "online.max_new_tokens": 48, "eval.max_new_tokens": 48,
    }


def key_paths(tree: Any, prefix: str = "") -> set[str]:
    """Dotted key paths of a results tree; list items share ``[]`` and the model, ranking method
    and category names under ``evaluation``, ``ranking``, ``timings`` and ``*by_category`` share ``*``."""
    out: set[str] = set()
    if isinstance(tree, dict):
        wild = prefix.endswith(("evaluation", "ranking", "timings", "by_category"))
        for key, value in tree.items():
            path = f"{prefix}.{'*' if wild else key}" if prefix else key
            out |= {path} | key_paths(value, path)
    elif isinstance(tree, list):
        for value in tree:
            out |= key_paths(value, prefix + "[]")
    return out


def check_results(results: dict[str, Any], run_dir: Path) -> None:
    """Every stage's block and the report are there, and no key claims a gold reward."""
    missing = [b for b in BLOCKS if not results.get(b)]
    if missing:
        raise RehearsalError(f"results.json lacks {', '.join(missing)}")
    gold = sorted(p for p in key_paths(results) if GOLD_KEY.search(p))
    if gold:
        raise RehearsalError(f"results.json holds gold-reward keys on hub data: {', '.join(gold)}")
    for name in ("report.md", *(f"notebooks/{n}" for n in NOTEBOOKS)):
        if not (run_dir / name).is_file():
            raise RehearsalError(f"{run_dir / name} was not written")


def check_exports(run_dir: Path, models: list[str], questions: dict[str, list[dict[str, Any]]]) -> None:
    """Every model answered every benchmark question, every turn of it, in each tool's format."""
    import json

    for name in models:
        alpaca = json.loads((run_dir / f"exports/{name}.alpaca_eval.json").read_text())
        if [r["instruction"] for r in alpaca] != [q["turns"][0] for q in questions["alpaca_eval"]]:
            raise RehearsalError(f"exports/{name}.alpaca_eval.json does not answer AlpacaEval's instructions in order")
        lines = [json.loads(x) for x in (run_dir / f"exports/{name}.mt_bench.jsonl").read_text().splitlines()]
        if [(x["question_id"], len(x["choices"][0]["turns"])) for x in lines] != [
                (q["question_id"], len(q["turns"])) for q in questions["mt_bench"]]:
            raise RehearsalError(f"exports/{name}.mt_bench.jsonl does not answer every MT-Bench question and turn")


def rehearse(run_dir: str | Path | None = None, hub_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Build (or reuse) the mini hub, run every notebook on it from scratch, check the results."""
    run_dir = Path(run_dir or default_run_dir("rehearsal"))
    start = time.time()
    hub = build_mini_hub(hub_dir or default_run_dir("mini_hub"))
    built = time.time() - start
    results = run_pipeline(PRESET, run_dir, rehearsal_overrides(hub), progress=progress)
    check_results(results, run_dir)
    cfg = load_config(PRESET, rehearsal_overrides(hub))
    check_exports(run_dir, model_names(cfg), load_benchmarks(cfg))
    print(f"rehearsal: {PRESET} on the mini hub ({hub}) passed in {time.time() - start:.0f}s "
          f"({built:.0f}s of it building or finding the mini hub); run dir {run_dir}")
    return results
