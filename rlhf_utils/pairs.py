"""Turning K scored samples per prompt into DPO preference pairs.

Rules (the paper's ``choose_type``):

* ``max_min`` (default): the best against the worst sample. Best-of-K plays the paper's
  "main agent" (exploit the reward), worst-of-K the "enhancer" (the most different view).
* ``max_random``: the best against a random other sample.
* ``random``: two random samples, ordered by reward.
* ``max_min_p``: ``max_min`` on the length-penalised reward ``r - lambda * len(response in characters)``;
  the paper's lambda = 0.001 cut response length by 40%.

Identical responses and exact reward ties are dropped; an optional margin drops pairs
whose reward gap is smaller. Every prompt that yields no pair is counted.

Usage::

    rows, stats = select_pairs(prompts, responses, rewards, rule="max_min", length_penalty=0.0, margin=0.0, seed=0)
"""

from __future__ import annotations

import random
from typing import Any

from .data import Messages

RULES = ("max_min", "max_random", "random", "max_min_p")


def check_rule(rule: str, length_penalty: float) -> None:
    if rule not in RULES:
        raise ValueError(f"online.selection: unknown rule {rule!r} (choose from {', '.join(RULES)})")
    if length_penalty < 0:
        raise ValueError(f"online.length_penalty: must be >= 0 (got {length_penalty})")


def _pick(rng: random.Random, values: list[float], rule: str) -> tuple[int, int]:
    """Indices (chosen, rejected) among one prompt's samples."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    best, worst = order[-1], order[0]
    if rule in ("max_min", "max_min_p"):
        return best, worst
    if rule == "max_random":
        return best, rng.choice([i for i in range(len(values)) if i != best])
    a, b = rng.sample(range(len(values)), 2)
    return (a, b) if values[a] >= values[b] else (b, a)


def select_pairs(
    prompts: list[Messages],
    responses: list[list[str]],
    rewards: list[list[float]],
    rule: str,
    length_penalty: float,
    margin: float,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One pair per prompt at most, as TRL conversational preference rows with their rewards."""
    check_rule(rule, length_penalty)
    rng = random.Random(seed)
    rows, stats = [], {"prompts": len(prompts), "pairs": 0, "identical": 0, "tie": 0, "below_margin": 0, "too_few": 0}
    for prompt, rs, scores in zip(prompts, responses, rewards):
        if len(rs) < 2:
            stats["too_few"] += 1
            continue
        values = [s - length_penalty * len(r) for r, s in zip(rs, scores)] if rule == "max_min_p" else list(scores)
        c, r = _pick(rng, values, rule)
        if rs[c].strip() == rs[r].strip():
            stats["identical"] += 1
        elif values[c] == values[r]:
            stats["tie"] += 1
        elif values[c] - values[r] < margin:
            stats["below_margin"] += 1
        else:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": rs[c]}],
                    "rejected": [{"role": "assistant", "content": rs[r]}],
                    "reward_chosen": float(scores[c]),
                    "reward_rejected": float(scores[r]),
                }
            )
    stats["pairs"] = len(rows)
    return rows, stats


def pair_iteration(run: Any, t: int, scored: Any) -> tuple[Any, dict[str, int]]:
    """Step 3 of online iteration ``t``: :func:`select_pairs` with the run's rule
    (``online.selection``, ``length_penalty``, ``margin``) over the scored samples. Saved with its
    fingerprint to ``online/iter_<t>/pairs`` (``prompt``, ``chosen``, ``rejected`` and both
    rewards), the statistics and seconds to ``pair_stats.json``. Usage::

        pairs, stats = pair_iteration(run, 1, scored)
    """
    import time

    from datasets import Dataset, load_from_disk

    from .artifacts import atomic_dir, read_json, reusable, write_stamped_json
    from .seeds import seed_for

    path, stamp, stats_path = run.iter_dir(t) / "pairs", run.stamp(f"pair:{t}"), run.iter_dir(t) / "pair_stats.json"
    if reusable(path, stamp) and (done := read_json(stats_path, stamp, quiet=True)) is not None:
        return load_from_disk(str(path)), done["stats"]
    o, start = run.cfg.online, time.time()
    rows, stats = select_pairs(list(scored["prompt"]), list(scored["responses"]), list(scored["rewards"]),
                               o.selection, o.length_penalty, o.margin, seed=seed_for(run.cfg.runtime.seed, "pair_rule", t))
    if not rows:
        raise ValueError(f"iteration {t}: no prompt gave a pair ({stats}); check online.margin and the scorer")
    ds = Dataset.from_list(rows)
    with atomic_dir(path, stamp) as tmp:
        ds.save_to_disk(str(tmp))
    write_stamped_json(stats_path, {"stats": stats, "seconds": time.time() - start}, stamp)
    return ds, stats
