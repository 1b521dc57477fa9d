"""Stage 5 outputs: the model comparison table and ``report.md`` (the answer files: ``rlhf_utils.benchmarks``).

Usage::

    table, frames = compare_models(run, cfg, has_gold=True)    # one row per model, from the stage-4 eval samples
    write_report(run, cfg, table, figures, summary_lines)      # <run>/report.md + PNG plots beside it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import RunDir, atomic_write_text
from .config import Config
from .evaluation import bootstrap_ci, summarize


FIGURES = ("win_rates_and_kl", "lengths")  # the plots report.md embeds, saved as <name>.png beside it


def model_names(cfg: Config) -> list[str]:
    """The models stage 5 compares, in reading order."""
    return ["sft", "offline_dpo", *[f"iter_{t}" for t in range(1, cfg.online.iterations + 1)]]


def load_samples(run: RunDir, name: str) -> pd.DataFrame:
    """The held-out samples stage 4 drew from one model (same prompts, settings and seed for all)."""
    from .evaluation import eval_frame

    run.require(f"eval/{name}.json", "04_online_iterative_dpo.ipynb", f"eval:{name}")
    return eval_frame(run, name)


def compare_models(run: RunDir, cfg: Config, has_gold: bool) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per model: gold reward with its bootstrap CI, gold / length-controlled / RM win rates
    against SFT, mean length, KL to the reference. Samples are paired with SFT's by position."""
    frames = {name: load_samples(run, name) for name in model_names(cfg)}
    rows = {}
    for name, f in frames.items():
        rows[name] = summarize(f, baseline=frames["sft"])  # the SFT row is the baseline itself (win rates 0.5)
        if has_gold:
            rows[name]["gold_reward_ci"] = list(bootstrap_ci(f["gold"].to_numpy(), cfg.eval.bootstrap_samples, seed=cfg.runtime.seed))
    return pd.DataFrame(rows).T, frames


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-readable table (no extra dependency such as tabulate)."""
    def cell(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(cell(x) for x in v) + "]"
        return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)

    head = "| model | " + " | ".join(table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    body = [f"| {name} | " + " | ".join(cell(v) for v in row) + " |" for name, row in table.iterrows()]
    return "\n".join([head, rule, *body])


def write_report(run: RunDir, cfg: Config, table: pd.DataFrame, figures: dict[str, Any], summary: list[str]) -> Path:
    """``<run>/report.md``: the headline table, the summary and the plots, readable on GitHub."""
    if unknown := set(figures) - set(FIGURES):
        raise ValueError(f"write_report: unknown figure name(s) {sorted(unknown)}; add them to report.FIGURES")
    for name, fig in figures.items():
        fig.savefig(run / f"{name}.png", dpi=110, bbox_inches="tight")
    parts = [
        f"# RLHF Workflow run report: preset `{cfg.name}`, seed {cfg.runtime.seed}",
        "",
        "Every model was sampled on the same held-out evaluation prompts with the same settings "
        f"(temperature {cfg.eval.temperature}, top_p {cfg.eval.top_p}, {cfg.eval.samples_per_prompt} samples per prompt).",
        "",
        markdown_table(table),
        "",
        *summary,
        "",
        *[f"![{name}]({name}.png)" for name in figures],
        "",
    ]
    path = run / "report.md"
    atomic_write_text(path, "\n".join(parts))
    return path
