"""Online iterative DPO (the paper's stage 4) and the offline DPO baseline beside it.

For t = 1..T, on iteration t's own fresh prompts, each step a function in the module its name
suggests:

1. ``generation.sample_iteration``: K responses per prompt from the policy of t-1;
2. ``scoring.score_iteration``: the judge scores them (the BT reward model, or the preference
   model's tournament with ``online.scorer: pm``);
3. ``pairs.pair_iteration``: the pair rule (``online.selection``: best vs worst by default);
4. ``trainers.train_iteration``: DPO from the policy of t-1 against the reference;
5. ``evaluation.evaluate_checkpoint``: the new policy on the held-out prompts.

Each step writes its artifact atomically under ``<run>/online/iter_<t>/`` (the model under
``<run>/models/iter_<t>``, the evaluation under ``<run>/eval/``) with its fingerprint
(``rlhf_utils.fingerprints``) and the seconds it took, and is reused when that artifact exists
and was made with the same settings. This module holds what the steps share: the inputs loaded
once (:class:`LoopInputs`), the record of an iteration, the whole loop for scripts, and the
offline baseline at equal budget.

Usage (notebook 04 spells the loop out)::

    loop = prepare_loop(cfg, run, world.gold_reward)
    stats = run_loop(run, loop)                   # one dict per iteration
    offline = offline_baseline(run, loop, stats)  # DPO on the offline pairs at equal budget
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

from .artifacts import RunDir, read_json, write_stamped_json
from .config import Config
from .data import DATA_SPLITS, iteration_names, load_splits, prepare_data, user
from .evaluation import GoldReward, eval_frame, evaluate_checkpoint, offpolicy_distance
from .generation import sample_iteration, uses_vllm
from .launch import launched
from .models import load_causal_lm, load_tokenizer, resolve_device
from .pairs import check_rule, pair_iteration
from .scoring import PreferenceScorer, RewardScorer, score_iteration
from .trainers import PAIR_COLUMNS, TrainLog, drop_long_prompts, train_dpo, train_iteration, training_pairs


def check_tokenizer_covers(tok: Any, texts: list[str], what: str) -> None:
    """Fail early when a scorer's tokenizer turns the policy's text into unknown tokens."""
    unk = tok.unk_token_id
    if unk is None:
        return
    for text in texts:
        if unk in tok(text, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"{what}: its tokenizer cannot represent the policy's text {text!r} (unknown tokens)")


@dataclass
class LoopInputs:
    """What every iteration reads, loaded once: each iteration's fresh prompts, the held-out
    prompts, the policy's tokenizer, the reward model (the judge of record for evaluation), the
    judge that ranks the samples (the reward model, or the preference model), and the gold reward
    (the toy world's truth; None for hub data)."""

    prompts: dict[int, Dataset]
    eval_prompts: Dataset
    offline_pairs: Dataset
    tok: Any
    rm: RewardScorer
    judge: RewardScorer | PreferenceScorer
    gold: GoldReward | None = None


def prepare_loop(cfg: Config, run: RunDir, gold: GoldReward | None = None) -> LoopInputs:
    """Load the loop's inputs and check them before any sampling: the pair rule, K, prompts left
    after dropping over-long ones (at most ``online.prompts_per_iteration`` per iteration), and
    judges whose tokenizers can read the policy's text."""
    o = cfg.online
    check_rule(o.selection, o.length_penalty)
    if o.k < 2:
        raise ValueError(f"online.k: must be >= 2 (got {o.k})")
    # Data come from notebook 01; iteration prompt sets are (re)built here when the iterations changed.
    splits = load_splits(run, DATA_SPLITS) | prepare_data(cfg, run, iteration_names(cfg))
    sft_path = str(run.require("models/sft", "01_sft.ipynb", "sft"))
    tok = load_tokenizer(sft_path, cfg)
    # Prompts longer than data.max_prompt_length are dropped (with a printed count) before any sampling.
    for name in [*iteration_names(cfg), "eval_prompts"]:
        splits[name] = drop_long_prompts(splits[name], tok, cfg.data.max_prompt_length, name)
        if len(splits[name]) == 0:
            raise ValueError(f"{name}: has no prompts; the online loop needs fresh prompts every iteration")
        if o.prompts_per_iteration and name != "eval_prompts":  # the first N of the set (a smaller budget)
            splits[name] = splits[name].select(range(min(o.prompts_per_iteration, len(splits[name]))))
    rm = RewardScorer.load(str(run.require("models/reward_model", "02_reward_model.ipynb", "reward_model")), cfg)
    pm = (PreferenceScorer.load(str(run.require("models/preference_model", "03_preference_model.ipynb", "preference_model")), cfg)
          if o.scorer == "pm" else None)
    # The scorer reads the policy's text with its own tokenizer: check it can, before any sampling.
    sample = [m[-1]["content"] for m in splits["sft"].select(range(min(64, len(splits["sft"]))))["messages"]]
    check_tokenizer_covers(rm.tok, sample, "reward model")
    if pm:
        check_tokenizer_covers(pm.tok, sample, "preference model")
    uses_vllm(cfg)  # a backend that cannot run fails here, before any sampling
    return LoopInputs(prompts={t: splits[f"iteration_{t}"] for t in range(1, o.iterations + 1)},
                      eval_prompts=splits["eval_prompts"], offline_pairs=splits["preference"], tok=tok, rm=rm,
                      judge=pm or rm, gold=gold)


def steps_for(cfg: Config, n_pairs: int) -> int:
    """DPO optimizer steps for ``n_pairs`` pairs (``dpo.epochs`` passes at ``dpo.global_batch_size``)."""
    d = cfg.dpo
    return math.ceil(n_pairs / d.global_batch_size) * math.ceil(d.epochs)


def record_iteration(run: RunDir, t: int, scored: Dataset, pairs: Dataset, pair_stats: dict[str, int], log: TrainLog,
                     summary: dict[str, Any]) -> dict[str, Any]:
    """Iteration t's numbers, saved to ``stats.json``. The seconds of each step are those its
    artifact recorded when it was made, so a reused step counts the run that made it, once."""
    stats_path, stamp = run.iter_dir(t) / "stats.json", run.stamp(f"eval:iter_{t}")
    if (done := read_json(stats_path, stamp, quiet=True)) is not None:
        return done["stats"]
    rollout = read_json(run.iter_dir(t) / "rollout.json") or {}
    seconds = {
        "generate": rollout.get("seconds", 0.0),
        "score": (read_json(run.iter_dir(t) / "score.json") or {}).get("seconds", 0.0),
        "pair": (read_json(run.iter_dir(t) / "pair_stats.json") or {}).get("seconds", 0.0),
        "train": log.seconds,
        "evaluate": summary.get("eval_seconds", 0.0),
    }
    train_rows = len(training_pairs(run, t, pairs))
    dpo_tokens = [h["num_tokens"] for h in log.history if "num_tokens" in h]
    has_gold = "gold" in scored.column_names
    stats = {
        "iteration": t,
        **{k: v for k, v in summary.items() if k != "eval_seconds"},
        "sample_proxy_reward": float(np.mean([np.mean(r) for r in scored["rewards"]])),
        "sample_gold_reward": float(np.mean([np.mean(g) for g in scored["gold"]])) if has_gold else None,
        "pairs": pair_stats["pairs"],
        "prompts": pair_stats["prompts"],
        "pair_stats": pair_stats,
        "train_pairs": train_rows,
        "train_steps": steps_for(run.cfg, train_rows),
        "phase_seconds": seconds,
        "seconds": sum(seconds.values()),
        "dpo_loss": [h["loss"] for h in log.history if "loss" in h],
        # Generated tokens per second of the generate step (model loading included), and DPO's
        # non-padding chosen + rejected tokens per second of its training wall time.
        "throughput": {
            "rollout_tokens_per_second": rollout["new_tokens"] / rollout["seconds"] if rollout else None,
            "dpo_tokens_per_second": dpo_tokens[-1] / log.seconds if dpo_tokens and log.seconds else None,
        },
    }
    write_stamped_json(stats_path, {"stats": stats}, stamp)
    return stats


def iteration(run: RunDir, loop: LoopInputs, t: int) -> dict[str, Any]:
    """One full iteration, the paper's five steps (notebook 04 shows them as its loop)."""
    samples = sample_iteration(run, t, loop.prompts[t], loop.tok)
    scored = score_iteration(run, t, samples, loop.judge, loop.gold)
    pairs, pair_stats = pair_iteration(run, t, scored)
    log = train_iteration(run, t, pairs)
    summary = evaluate_checkpoint(run, f"iter_{t}", run.policy_path(t), loop)
    return record_iteration(run, t, scored, pairs, pair_stats, log, summary)


def run_loop(run: RunDir, loop: LoopInputs, progress: bool = True) -> list[dict[str, Any]]:
    """The SFT model's evaluation, then every iteration (for scripts; notebook 04 spells it out)."""
    evaluate_checkpoint(run, "sft", run.policy_path(0), loop)
    out = []
    for t in range(1, run.cfg.online.iterations + 1):
        out.append(iteration(run, loop, t))
        if progress:
            print(progress_line(out[-1]), flush=True)
    return out


def offline_budget(run: RunDir, loop: LoopInputs, online: list[dict[str, Any]]) -> tuple[Dataset, int]:
    """The offline pairs and optimizer steps of the equal-budget baseline: as many of each as the
    whole online run (its iteration records ``online``) used."""
    n_pairs = sum(s["train_pairs"] for s in online)
    offline = loop.offline_pairs.shuffle(seed=run.cfg.runtime.seed)
    return offline.select(range(min(n_pairs, len(offline)))).select_columns(PAIR_COLUMNS), sum(s["train_steps"] for s in online)


def train_offline_dpo(run: RunDir, offline: Dataset, steps: int) -> TrainLog:
    """DPO from the SFT model (also its reference) on ``offline`` for ``steps`` optimizer steps."""
    sft_path = run.policy_path(0)
    return train_dpo(run.cfg, sft_path, sft_path, offline, run / "models/offline_dpo", max_steps=steps,
                     stamp=run.stamp("offline_dpo"))


def offline_baseline(run: RunDir, loop: LoopInputs, online: list[dict[str, Any]]) -> dict[str, Any]:
    """DPO from the SFT model on the offline preference set, with as many pairs and optimizer
    steps as the whole online run used: the paper's comparison at equal budget."""
    offline, steps = offline_budget(run, loop, online)
    out = run / "models/offline_dpo"
    log = launched("offline_dpo", run, out) or train_offline_dpo(run, offline, steps)
    summary = evaluate_checkpoint(run, "offline_dpo", str(out), loop)
    return {
        **{k: v for k, v in summary.items() if k != "eval_seconds"},
        **offline_data_distance(run, loop, offline),
        "pairs": len(offline),
        "train_steps": steps,
        "seconds": log.seconds + summary["eval_seconds"],
    }


def offline_data_distance(run: RunDir, loop: LoopInputs, offline: Dataset, max_pairs: int = 2048) -> dict[str, float]:
    """How off-policy the offline pairs are for the SFT model: its log-likelihood per token of its
    own held-out samples minus that of the pairs' answers (``evaluation.offpolicy_distance``), on at
    most ``max_pairs`` pairs (a mean needs no more, and a real preset trains on tens of thousands)."""
    cfg, sft = run.cfg, eval_frame(run, "sft")
    offline = offline.select(range(min(max_pairs, len(offline))))
    model = load_causal_lm(run.policy_path(0), cfg)
    own = ([user(p) for p in sft["prompt"]], list(sft["response"]))
    answers = [m[-1]["content"] for side in ("chosen", "rejected") for m in offline[side]]
    other = (list(offline["prompt"]) * 2, answers)
    return offpolicy_distance(model, loop.tok, own, other, resolve_device(cfg), cfg.online.score_batch_size)


def progress_line(stats: dict[str, Any]) -> str:
    """One line per finished iteration: pairs, held-out gold (toy world), proxy, KL, wall time."""
    gold = f"gold {stats['gold_reward']:.3f}, win rate vs SFT {stats['win_rate_vs_sft']:.3f}, " if "gold_reward" in stats else ""
    return (f"iteration {stats['iteration']}: {stats['pairs']} pairs, {gold}proxy {stats['proxy_reward']:.3f}, "
            f"KL {stats['kl_to_ref']:.2f}, {stats['seconds']:.1f}s")
