"""The datasets every stage reads, in TRL's standard conversational formats.

* ``sft``: ``messages`` (user turn, assistant turn).
* ``preference`` / ``preference_test``: ``prompt`` (messages ending in a user turn),
  ``chosen`` and ``rejected`` (one assistant message each); the toy world adds
  ``category``, the gold reward of both sides and the annotator's probability of its label.
* ``iteration_<t>`` and ``eval_prompts``: ``prompt`` (the iteration sets carry their own
  fingerprint, ``prompts``: see ``rlhf_utils.fingerprints``).

For the tiny preset they are generated from the toy world (disjoint prompt splits, seeded);
for the real presets they come from the data recipe's hub mixture (``rlhf_utils.recipes``).
Either way they are saved under ``<run>/data/<split>`` and loaded back from there.

Usage::

    splits = prepare_data(cfg, run)          # builds once, then reuses what is on disk
    splits["sft"][0]["messages"]
"""

from __future__ import annotations

import random
from typing import Any, Callable

from datasets import Dataset, load_from_disk

from .artifacts import RunDir, atomic_dir, reusable
from .config import Config
from .seeds import seed_for
from .world import ToyWorld


Messages = list[dict[str, str]]  # a conversation in TRL's format: [{"role": ..., "content": ...}, ...]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def prompt_text(prompt: list[dict[str, str]]) -> str:
    """The last user turn of a conversational prompt (what the toy world's gold reward reads)."""
    return prompt[-1]["content"]


DATA_SPLITS = ["sft", "preference", "preference_test", "eval_prompts"]


def iteration_names(cfg: Config) -> list[str]:
    """``iteration_1`` .. ``iteration_T``: each online iteration's fresh prompts (the ``prompts`` phase)."""
    return [f"iteration_{t + 1}" for t in range(cfg.online.iterations)]


def split_names(cfg: Config) -> list[str]:
    return [*DATA_SPLITS, *iteration_names(cfg)]


def split_phase(name: str) -> str:
    """The phase whose fingerprint a split carries: ``prompts`` for iteration sets, else ``data``."""
    return "prompts" if name.startswith("iteration_") else "data"


def _preference_rows(rows: list[dict[str, Any]]) -> dict[str, list]:
    return {
        "prompt": [user(r["prompt"]) for r in rows],
        "chosen": [assistant(r["chosen"]) for r in rows],
        "rejected": [assistant(r["rejected"]) for r in rows],
        "category": [r["category"] for r in rows],
        "gold_chosen": [r["gold_chosen"] for r in rows],
        "gold_rejected": [r["gold_rejected"] for r in rows],
        "annotator_p_chosen": [r["annotator_p_chosen"] for r in rows],
    }


def build_toy_world_splits(cfg: Config, world: ToyWorld) -> dict[str, Dataset]:
    """Every split of the toy world, deterministic in ``cfg.runtime.seed``."""
    w, seed = cfg.world, cfg.runtime.seed
    pools = world.split_pool(w.n_eval_prompts, w.n_iteration_prompts, cfg.online.iterations, seed_for(seed, "data_splits"))
    rng = random.Random(seed_for(seed, "sft_prompts"))
    sft_prompts = [rng.choice(pools["train"]) for _ in range(w.n_sft_prompts)]
    sft = {"messages": [user(i.text) + assistant(world.teacher_response(i, rng, w.teacher_skill)) for i in sft_prompts]}
    # The preference pairs are written by other writers (world.offline_writers), as the paper's were by other LLMs.
    writers = [world.writer(name, w.teacher_skill) for name in w.offline_writers]
    pair_args = dict(writers=writers, temperature=w.annotator_temperature, length_bias=w.annotator_length_bias)
    train_pairs = world.preference_pairs(pools["train"], w.n_pref_prompts, seed_for(seed, "preference_pairs"), **pair_args)
    # Held-out pairs live on the evaluation prompts, which no training stage ever sees.
    test_pairs = world.preference_pairs(pools["eval"], w.n_eval_prompts, seed_for(seed, "held_out_pairs"), **pair_args)
    splits = {
        "sft": Dataset.from_dict(sft),
        "preference": Dataset.from_dict(_preference_rows(train_pairs)),
        "preference_test": Dataset.from_dict(_preference_rows(test_pairs)),
        "eval_prompts": Dataset.from_dict({"prompt": [user(i.text) for i in pools["eval"]]}),
    }
    for t in range(cfg.online.iterations):
        name = f"iteration_{t + 1}"
        splits[name] = Dataset.from_dict({"prompt": [user(i.text) for i in pools[name]]})
    return splits


def build_recipe_splits(cfg: Config, names: list[str] | None = None) -> dict[str, Dataset]:
    """The real presets' splits (default: all), from the hub mixture named by ``data.recipe``."""
    from .recipes import build_split, load_recipe

    recipe, seed = load_recipe(cfg.data.recipe), cfg.runtime.seed
    names = names or split_names(cfg)
    splits = {name: build_split(recipe, name, seed) for name in ("sft", "eval_prompts") if name in names}
    if {"preference", "preference_test"} & set(names):
        full = build_split(recipe, "preference", seed).train_test_split(test_size=0.02, seed=seed)
        splits["preference"], splits["preference_test"] = full["train"], full["test"]
    for t, name in enumerate(iteration_names(cfg)):
        if name in names:
            splits[name] = build_split(recipe, "iteration_prompts", seed, index=t)
    return splits


def is_toy_world(cfg: Config) -> bool:
    return cfg.data.recipe == "toy_world" or cfg.data.recipe.endswith("toy_world.yaml")


def gold_reward_of(cfg: Config) -> Callable[[str, str], float] | None:
    """The toy world's gold reward ``(prompt text, response) -> [0, 1]`` for the toy-world recipe;
    None for hub data, which has no truth to measure against."""
    return ToyWorld.from_recipe(cfg.data.recipe).gold_reward if is_toy_world(cfg) else None


def prepare_data(cfg: Config, run: RunDir, names: list[str] | None = None) -> dict[str, Dataset]:
    """Build the splits (default: all of them) into ``<run>/data`` unless they are there, made with
    the same settings; return them loaded. The iteration prompt sets carry their own fingerprint
    (``prompts``), so cutting the same prompt budget into other iterations redoes only them."""
    names = names or split_names(cfg)
    missing = [n for n in names if not reusable(run / f"data/{n}", run.stamp(split_phase(n)), quiet=True)]
    if missing:
        print(f"data: building {', '.join(missing)}" + (" (the others are reused)" if len(missing) < len(names) else ""))
        splits = build_toy_world_splits(cfg, ToyWorld.from_recipe(cfg.data.recipe)) if is_toy_world(cfg) else build_recipe_splits(cfg, missing)
        for name in missing:
            with atomic_dir(run / f"data/{name}", run.stamp(split_phase(name))) as tmp:
                splits[name].save_to_disk(str(tmp))
    else:
        print(f"data: reusing {len(names)} splits under data/ (same settings)")
    return load_splits(run, names)


def load_splits(run: RunDir, names: list[str]) -> dict[str, Dataset]:
    """The named splits, each checked to be made with this configuration's data settings."""
    return {name: load_from_disk(str(run.require(f"data/{name}", "01_sft.ipynb", split_phase(name), quiet=True)))
            for name in names}


def pair_categories(ds: Dataset) -> list[str] | None:
    """The toy world's pair categories (easy, hard, length_trap); ``None`` for hub pairs, which carry none."""
    return list(ds["category"]) if "category" in ds.column_names else None


def _answer(value: Any) -> str:
    """The text of a preference side: a string, or the last message of a conversation."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    return value.strip() if isinstance(value, str) else ""


def clean_preferences(ds: Dataset, name: str) -> Dataset:
    """Drop preference rows whose ``chosen`` or ``rejected`` is missing or empty, or where the two
    are identical (no signal, and a zero-gradient pair for DPO); print a count of each kind."""
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)} (columns present: {', '.join(ds.column_names)})")
    empty, same, keep = 0, 0, []
    for i, (c, r) in enumerate(zip(ds["chosen"], ds["rejected"])):
        c, r = _answer(c), _answer(r)
        if not c or not r:
            empty += 1
        elif c == r:
            same += 1
        else:
            keep.append(i)
    if empty:
        print(f"{name}: dropped {empty} rows with a missing or empty chosen/rejected answer")
    if same:
        print(f"{name}: dropped {same} rows whose chosen and rejected answers are identical")
    return ds.select(keep) if len(keep) < len(ds) else ds
