"""Online iterative DPO (the paper's stage 4) and the offline DPO baseline beside it.

For t = 1..T, on iteration t's own fresh prompts:

1. **generate** K responses per prompt from the current policy (``online.k``, temperature, top_p);
2. **score** them with the BT reward model, or rank them with the preference model's tournament;
3. **pair** them (``online.selection``: best vs worst by default);
4. **train** DPO from the previous policy against the reference (the SFT model by default);
5. **evaluate** the new policy on the held-out prompts (gold reward, win rate vs SFT, proxy, KL, length).

Every phase writes its artifact atomically under ``<run>/online/iter_<t>/`` (or the model
under ``<run>/models/iter_<t>``) with its fingerprint (``rlhf_utils.fingerprints``), and is
skipped when that artifact exists and was made with the same settings, so a rerun resumes where
an interrupted one stopped, and a changed knob redoes what depends on it.

Usage::

    loop = OnlineLoop(cfg, run, world)
    stats = loop.run_all()                     # one dict per iteration
    offline = loop.offline_baseline(stats)     # DPO on the offline pairs at equal budget
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, concatenate_datasets, load_from_disk

from .artifacts import RunDir, atomic_dir, read_json, reusable, write_stamped_json
from .config import Config
from .data import iteration_names, load_splits, prepare_data, prompt_text, DATA_SPLITS
from .evaluation import GoldReward, evaluate_policy
from .generation import make_generator, uses_vllm
from .models import load_causal_lm, load_tokenizer
from .launch import launched
from .pairs import check_rule, select_pairs
from .scoring import PreferenceScorer, RewardScorer
from .seeds import seed_for
from .trainers import TrainLog, drop_long_prompts, train_dpo
from .world import ToyWorld

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def check_tokenizer_covers(tok: Any, texts: list[str], what: str) -> None:
    """Fail early when a scorer's tokenizer turns the policy's text into unknown tokens."""
    unk = tok.unk_token_id
    if unk is None:
        return
    for text in texts:
        if unk in tok(text, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"{what}: its tokenizer cannot represent the policy's text {text!r} (unknown tokens)")


def _timed(phase: str):
    """Add a phase method's wall time to ``self.phase_seconds[key]`` (key: its first argument,
    the iteration, or the evaluated model's name)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, key, *args, **kwargs):
            start = time.time()
            try:
                return fn(self, key, *args, **kwargs)
            finally:
                bucket = self.phase_seconds.setdefault(key, {})
                bucket[phase] = bucket.get(phase, 0.0) + time.time() - start
        return inner
    return wrap


def training_pairs(run: RunDir, t: int, current: Dataset) -> Dataset:
    """Iteration t's DPO data: its own pairs, or (``online.accumulate``) all pairs gathered so far."""
    if not run.cfg.online.accumulate or t == 1:
        return current.select_columns(PAIR_COLUMNS)
    older = [load_from_disk(str(run.iter_dir(s) / "pairs")).select_columns(PAIR_COLUMNS) for s in range(1, t)]
    return concatenate_datasets([*older, current.select_columns(PAIR_COLUMNS)])


class OnlineLoop:
    """The online iterative DPO loop over one run directory."""

    def __init__(self, cfg: Config, run: RunDir, world: ToyWorld | None):
        self.cfg, self.run = cfg, run
        self.gold: GoldReward | None = world.gold_reward if world else None  # the toy world's truth, if any
        self.phase_seconds: dict[int | str, dict[str, float]] = {}  # wall time of each phase this session
        o = cfg.online
        check_rule(o.selection, o.length_penalty)
        if o.k < 2:
            raise ValueError(f"online.k: must be >= 2 (got {o.k})")
        # Data come from notebook 01; iteration prompt sets are (re)built here when the iterations changed.
        self.splits = load_splits(run, DATA_SPLITS) | prepare_data(cfg, run, iteration_names(cfg))
        self.sft_path = str(run.require("models/sft", "01_sft.ipynb", "sft"))
        self.tok = load_tokenizer(self.sft_path, cfg)
        # Prompts longer than data.max_prompt_length are dropped (with a printed count) before any sampling.
        for name in [f"iteration_{t}" for t in range(1, o.iterations + 1)] + ["eval_prompts"]:
            self.splits[name] = drop_long_prompts(self.splits[name], self.tok, cfg.data.max_prompt_length, name)
            if o.prompts_per_iteration and name != "eval_prompts":  # the first N of the set (a smaller budget)
                self.splits[name] = self.splits[name].select(range(min(o.prompts_per_iteration, len(self.splits[name]))))
            if len(self.splits[name]) == 0:
                raise ValueError(f"{name}: has no prompts; the online loop needs fresh prompts every iteration")
        self.rm = RewardScorer.load(str(run.require("models/reward_model", "02_reward_model.ipynb", "reward_model")), cfg)
        self.pm = (
            PreferenceScorer.load(str(run.require("models/preference_model", "03_preference_model.ipynb", "preference_model")), cfg)
            if o.scorer == "pm"
            else None
        )
        # The scorer reads the policy's text with its own tokenizer: check it can, before any sampling.
        sample = [m[-1]["content"] for m in self.splits["sft"].select(range(min(64, len(self.splits["sft"]))))["messages"]]
        check_tokenizer_covers(self.rm.tok, sample, "reward model")
        if self.pm:
            check_tokenizer_covers(self.pm.tok, sample, "preference model")
        uses_vllm(cfg)  # a backend that cannot run fails here, before any sampling

    # ----------------------------------------------------------------- paths (the run dir's layout)
    def iter_dir(self, t: int) -> Path:
        return self.run.iter_dir(t)

    def policy_path(self, t: int) -> str:
        return self.run.policy_path(t)

    def reference_path(self, t: int) -> str:
        return self.run.reference_path(t)

    # ---------------------------------------------------------------- phases
    @_timed("generate")
    def generate(self, t: int) -> Dataset:
        """K samples per prompt; the rollout's token count and seconds go to ``rollout.json``."""
        path, stamp = self.iter_dir(t) / "samples", self.run.stamp(f"generate:{t}")
        if reusable(path, stamp) and read_json(self.iter_dir(t) / "rollout.json", stamp, quiet=True) is not None:
            return load_from_disk(str(path))
        o = self.cfg.online
        prompts = list(self.splits[f"iteration_{t}"]["prompt"])
        start = time.time()
        gen = make_generator(self.cfg, self.policy_path(t - 1), None, self.tok,
                             work_dir=self.iter_dir(t) / "shards", config_path=self.run / "config.yaml")
        responses = gen.generate(
            prompts, o.k, o.temperature, o.top_p, o.max_new_tokens, seed=seed_for(self.cfg.runtime.seed, "rollout", t),
            tag=f"generate:{t}",
        )
        ds = Dataset.from_dict({"prompt": prompts, "responses": responses})
        write_stamped_json(self.iter_dir(t) / "rollout.json", {"new_tokens": gen.new_tokens, "seconds": time.time() - start}, stamp)
        with atomic_dir(path, stamp) as tmp:
            ds.save_to_disk(str(tmp))
        return ds

    @_timed("score")
    def score(self, t: int, samples: Dataset) -> Dataset:
        path, stamp = self.iter_dir(t) / "scored", self.run.stamp(f"score:{t}")
        if reusable(path, stamp):
            return load_from_disk(str(path))
        prompts, responses = list(samples["prompt"]), list(samples["responses"])
        if self.pm:
            rewards, _ = self.pm.rank([prompt_text(p) for p in prompts], responses, method="round_robin")
        else:
            rewards = self.rm.score(prompts, responses)
        ds = samples.add_column("rewards", rewards)
        if self.gold:
            gold = [[self.gold(prompt_text(p), r) for r in rs] for p, rs in zip(prompts, responses)]
            ds = ds.add_column("gold", gold)
        with atomic_dir(path, stamp) as tmp:
            ds.save_to_disk(str(tmp))
        return ds

    @_timed("pair")
    def pair(self, t: int, scored: Dataset) -> tuple[Dataset, dict[str, int]]:
        path, stamp = self.iter_dir(t) / "pairs", self.run.stamp(f"pair:{t}")
        stats_path = self.iter_dir(t) / "pair_stats.json"
        if reusable(path, stamp) and (stats := read_json(stats_path, stamp, quiet=True)) is not None:
            return load_from_disk(str(path)), stats["stats"]
        o = self.cfg.online
        rows, stats = select_pairs(
            list(scored["prompt"]), list(scored["responses"]), list(scored["rewards"]),
            o.selection, o.length_penalty, o.margin, seed=seed_for(self.cfg.runtime.seed, "pair_rule", t),
        )
        if not rows:
            raise ValueError(f"iteration {t}: no prompt gave a pair ({stats}); check online.margin and the scorer")
        ds = Dataset.from_list(rows)
        with atomic_dir(path, stamp) as tmp:
            ds.save_to_disk(str(tmp))
        write_stamped_json(stats_path, {"stats": stats}, stamp)
        return ds, stats

    def training_pairs(self, t: int, current: Dataset) -> Dataset:
        return training_pairs(self.run, t, current)

    # ------------------------------------------------------------- evaluation
    @_timed("evaluate")
    def evaluate(self, name: str, model_path: str) -> dict[str, Any]:
        """``evaluation.evaluate_policy`` of one model (the judge: the reward model; the KL reference:
        the SFT model; win rates against the SFT model's samples), saved to ``eval/<name>.json``."""
        path, stamp = self.run / f"eval/{name}.json", self.run.stamp(f"eval:{name}")
        if (done := read_json(path, stamp)) is not None:
            return done["summary"]
        start = time.time()
        model = load_causal_lm(model_path, self.cfg)
        # The rollout's backend (vLLM or shards where configured; else HF generate on `model`).
        gen = make_generator(self.cfg, model_path, model, self.tok,
                             work_dir=self.run / f"eval/{name}.shards", config_path=self.run / "config.yaml")
        ref = model if model_path == self.sft_path else load_causal_lm(self.sft_path, self.cfg)
        baseline = None if name == "sft" else self.eval_frame("sft")
        summary, frame = evaluate_policy(self.cfg, model, self.tok, self.splits["eval_prompts"], self.rm, ref,
                                         self.gold, generator=gen, baseline=baseline)
        summary["eval_seconds"] = time.time() - start
        write_stamped_json(path, {"summary": summary, "samples": frame.to_dict(orient="records")}, stamp)
        return summary

    def eval_frame(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(json.loads((self.run / f"eval/{name}.json").read_text())["samples"])

    # -------------------------------------------------------------- the loop
    def train(self, t: int, pairs: Dataset) -> TrainLog:
        """DPO from the policy of iteration t-1 against the reference, on this iteration's pairs
        (all pairs so far with ``online.accumulate``): the policy of iteration t."""
        log = launched("dpo", self.run, self.policy_path(t), iteration=t) or train_dpo(
            self.cfg, self.policy_path(t - 1), self.reference_path(t), self.training_pairs(t, pairs), self.policy_path(t),
            stamp=self.run.stamp(f"policy:{t}"),
        )
        self.phase_seconds.setdefault(t, {})["train"] = log.seconds
        return log

    def record(self, t: int, scored: Dataset, pairs: Dataset, pair_stats: dict[str, int], log: TrainLog,
               summary: dict[str, Any]) -> dict[str, Any]:
        """Iteration t's numbers, saved to ``stats.json``; the saved ones (with the wall times of
        the run that made them) when the iteration finished before with the same settings."""
        stats_path, stamp = self.iter_dir(t) / "stats.json", self.run.stamp(f"eval:iter_{t}")
        if (done := read_json(stats_path, stamp, quiet=True)) is not None:
            return done["stats"]
        seconds = self.phase_seconds.get(t, {}) | {"evaluate": self.phase_seconds.get(f"iter_{t}", {}).get("evaluate", 0.0)}
        train_rows = len(self.training_pairs(t, pairs))
        rollout = read_json(self.iter_dir(t) / "rollout.json") or {}
        dpo_tokens = [h["num_tokens"] for h in log.history if "num_tokens" in h]
        stats = {
            "iteration": t,
            **{k: v for k, v in summary.items() if k != "eval_seconds"},
            "sample_proxy_reward": float(np.mean([np.mean(r) for r in scored["rewards"]])),
            "sample_gold_reward": float(np.mean([np.mean(g) for g in scored["gold"]])) if self.gold else None,
            "pairs": pair_stats["pairs"],
            "prompts": pair_stats["prompts"],
            "pair_stats": pair_stats,
            "train_pairs": train_rows,
            "train_steps": self.steps_for(train_rows),
            "phase_seconds": seconds,
            "seconds": sum(seconds.values()),
            "dpo_loss": [h["loss"] for h in log.history if "loss" in h],
            # Generated tokens per second of the generate phase (model loading included), and DPO's
            # non-padding chosen + rejected tokens per second of its training wall time.
            "throughput": {
                "rollout_tokens_per_second": rollout["new_tokens"] / rollout["seconds"] if rollout else None,
                "dpo_tokens_per_second": dpo_tokens[-1] / log.seconds if dpo_tokens and log.seconds else None,
            },
        }
        write_stamped_json(stats_path, {"stats": stats}, stamp)
        return stats

    def iteration(self, t: int) -> dict[str, Any]:
        """One full iteration, the paper's five steps (notebook 04 shows them as its loop)."""
        samples = self.generate(t)
        scored = self.score(t, samples)
        pairs, pair_stats = self.pair(t, scored)
        log = self.train(t, pairs)
        summary = self.evaluate(f"iter_{t}", self.policy_path(t))
        return self.record(t, scored, pairs, pair_stats, log, summary)

    def steps_for(self, n_pairs: int) -> int:
        d = self.cfg.dpo
        return math.ceil(n_pairs / d.global_batch_size) * math.ceil(d.epochs)

    def run_all(self, progress: bool = True) -> list[dict[str, Any]]:
        self.evaluate("sft", self.sft_path)
        out = []
        for t in range(1, self.cfg.online.iterations + 1):
            out.append(self.iteration(t))
            if progress:
                print(progress_line(out[-1]), flush=True)
        return out

    # ------------------------------------------------------- offline baseline
    def offline_baseline(self, online: list[dict[str, Any]]) -> dict[str, Any]:
        """DPO from the SFT model on the offline preference set, with as many pairs and
        optimizer steps as the whole online run used: the paper's comparison at equal budget."""
        n_pairs = sum(s["train_pairs"] for s in online)
        steps = sum(s["train_steps"] for s in online)
        offline = self.splits["preference"].shuffle(seed=self.cfg.runtime.seed)
        offline = offline.select(range(min(n_pairs, len(offline)))).select_columns(PAIR_COLUMNS)
        out = self.run / "models/offline_dpo"
        log = launched("offline_dpo", self.run, out) or train_dpo(
            self.cfg, self.sft_path, self.sft_path, offline, out, max_steps=steps, stamp=self.run.stamp("offline_dpo"))
        summary = self.evaluate("offline_dpo", str(self.run / "models/offline_dpo"))
        return {
            **{k: v for k, v in summary.items() if k != "eval_seconds"},
            "pairs": len(offline),
            "train_steps": steps,
            "seconds": log.seconds + summary["eval_seconds"],
        }


def progress_line(stats: dict[str, Any]) -> str:
    """One line per finished iteration: pairs, held-out gold (toy world), proxy, KL, wall time."""
    gold = f"gold {stats['gold_reward']:.3f}, win rate vs SFT {stats['win_rate_vs_sft']:.3f}, " if "gold_reward" in stats else ""
    return (f"iteration {stats['iteration']}: {stats['pairs']} pairs, {gold}proxy {stats['proxy_reward']:.3f}, "
            f"KL {stats['kl_to_ref']:.2f}, {stats['seconds']:.1f}s")
