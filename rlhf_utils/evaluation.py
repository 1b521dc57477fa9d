"""Measuring policies against the toy world's gold reward.

Usage::

    sampled = sample_eval(policy, tok, splits["eval_prompts"], cfg)
    gold = gold_scores(world, sampled)          # one gold reward per (prompt, response)
    float(np.mean(gold))
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config
from .data import prompt_text
from .generation import HFGenerator
from .models import resolve_device
from .world import ToyWorld, parse_instruction


def sample_eval(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Dataset, cfg: Config, seed_offset: int = 0
) -> pd.DataFrame:
    """Sample ``eval.samples_per_prompt`` responses per evaluation prompt with the eval settings.

    Every model is sampled with the same settings and seed, so their differences come from
    the weights alone. Returns one row per (prompt, response).
    """
    e = cfg.eval
    gen = HFGenerator(model, tok, resolve_device(cfg), cfg.online.generation_batch_size)
    responses = gen.generate(
        list(prompts["prompt"]), e.samples_per_prompt, e.temperature, e.top_p, e.max_new_tokens,
        seed=cfg.runtime.seed + 7919 + seed_offset,
    )
    rows = [
        {"prompt": prompt_text(p), "response": r}
        for p, rs in zip(prompts["prompt"], responses)
        for r in rs
    ]
    return pd.DataFrame(rows)


def gold_scores(world: ToyWorld, frame: pd.DataFrame) -> np.ndarray:
    return np.array([world.gold_reward(p, r) for p, r in zip(frame["prompt"], frame["response"])])


def teacher_frame(world: ToyWorld, prompts: Dataset, cfg: Config) -> pd.DataFrame:
    """The teacher's own answers to the evaluation prompts: the level SFT imitates."""
    rng = random.Random(cfg.runtime.seed + 11)
    rows = []
    for p in prompts["prompt"]:
        ins = parse_instruction(prompt_text(p))
        for _ in range(cfg.eval.samples_per_prompt):
            rows.append({"prompt": ins.text, "response": world.teacher_response(ins, rng, cfg.world.teacher_skill)})
    return pd.DataFrame(rows)


def bootstrap_ci(values: np.ndarray, samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(samples, len(values)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)
