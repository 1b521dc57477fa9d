"""Every seed of a run, derived from ``runtime.seed`` and a named purpose.

One table says which random draw gets which seed, so two draws never share one by accident and
a reader can see what changes with ``runtime.seed`` (everything). The offsets are the ones the
project has always used, so the tiny run's numbers are those it always had.

Usage::

    seed_for(cfg.runtime.seed, "rollout", t)      # iteration t's K samples per prompt
    seed_for(cfg.runtime.seed, "eval_sampling")   # the held-out answers of every model
"""

from __future__ import annotations

# purpose: (offset from the run seed, step per index). The index is the iteration for
# "rollout" and "pair_rule", the shard for "shard", an extra offset for "eval_sampling".
PURPOSES: dict[str, tuple[int, int]] = {
    "data_splits": (0, 0),            # the toy world's disjoint prompt pools
    "sft_prompts": (1, 0),            # which training prompts the teacher answers, and how
    "preference_pairs": (2, 0),       # the offline preference set
    "held_out_pairs": (3, 0),         # the held-out pairs of stages 2 and 3
    "ranking_candidates": (3, 0),     # notebook 03's K samples to rank (from the SFT model)
    "scorer_init": (1, 0),            # a freshly built reward / preference model (models.*: tiny)
    "teacher_answers": (11, 0),       # the teacher's answers to the evaluation prompts
    "eval_sampling": (7919, 1),       # every model's held-out answers: the same seed for all
    "rollout": (0, 1000),             # iteration t's samples
    "pair_rule": (0, 1),              # iteration t's random choices of max_random / random
    "shard": (0, 1),                  # data-parallel generation shard i of one call
    "benchmark": (104_729, 1),        # stage 5's benchmark answers: 10 x benchmark number + turn
}


def seed_for(run_seed: int, purpose: str, index: int = 0) -> int:
    """The seed of ``purpose`` (see :data:`PURPOSES`) in a run seeded with ``run_seed``."""
    if purpose not in PURPOSES:
        raise KeyError(f"seed purpose {purpose!r} is not in seeds.PURPOSES ({', '.join(PURPOSES)})")
    offset, step = PURPOSES[purpose]
    return run_seed + offset + step * index


def batch_seed(call_seed: int, batch: int) -> int:
    """The seed of batch ``batch`` within one generation call: distinct across calls and batches."""
    return call_seed * 100_003 + batch
