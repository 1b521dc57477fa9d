"""The peer a user would pick instead of our loop: TRL's fully online DPO trainer.

Two ways to spend the same sampling budget on the same prompts, reward model and DPO loss:

* **batch-iterative** (the paper, :mod:`rlhf_utils.online`): T times, sample a big batch
  (K responses for each of thousands of prompts) from a *frozen* policy, score it, pair
  best vs worst, then run several epochs of DPO on those pairs. The policy changes T times;
  each batch is on-policy only for the policy that sampled it.
* **fully online** (``trl.experimental.online_dpo.OnlineDPOTrainer``, Guo et al. 2024):
  every optimizer step samples 2 responses per prompt of the mini-batch from the *current*
  policy, scores them, and takes one DPO step on that single pair per prompt. The policy
  changes at every step and the data is always on-policy, but each prompt gives one pair
  out of 2 samples (not best-vs-worst of K), and no sample is ever reused.

:func:`run_online_dpo_peer` matches the budget in *generated samples* and evaluates the
result with the loop's own protocol (``evaluation.evaluate_policy``), so its numbers sit beside ``results.json``.

Usage::

    cfg, run, world = start("tiny", "runs/tiny", {})
    budget = cfg.online.iterations * cfg.world.n_iteration_prompts * cfg.online.k
    peer = run_online_dpo_peer(cfg, run, world.gold_reward, budget, run / "models/online_dpo_peer")
    peer["gold_reward"], peer["win_rate_vs_sft"], peer["updates"]
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import concatenate_datasets

from .artifacts import RunDir
from .config import Config
from .data import load_splits
from .evaluation import GoldReward, evaluate_policy
from .models import load_causal_lm, load_tokenizer
from .scoring import RewardScorer
from .trainers import _fit, common_args, drop_long_prompts, lora_config

GENERATIONS_PER_PROMPT = 2  # fixed inside OnlineDPOTrainer (self.num_generations = 2); not configurable


class RewardModelReward:
    """A TRL reward function backed by our Bradley-Terry reward model.

    TRL 1.16 calls custom reward functions as ``f(prompts=..., completions=..., completion_ids=...,
    trainer_state=..., **dataset_columns)`` and wants one float per completion. For conversational
    data a prompt is a message list and a completion is ``[{"role": "assistant", "content": text}]``.
    We score the decoded *text* through :class:`RewardScorer`, which re-renders it with the reward
    model's own tokenizer and chat template: the same scoring as ``scoring.score_iteration``, and correct
    even when the reward model's tokenizer differs from the policy's (TRL's built-in model path
    would need a matching ``reward_processing_classes`` to get that right).
    """

    def __init__(self, scorer: RewardScorer):
        self.scorer = scorer
        self.scored = 0  # completions scored so far = samples the trainer generated

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        msgs = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
        # Strip like HFGenerator does: word-level decoding leaves edge spaces the RM never saw.
        texts = [(c[-1]["content"] if isinstance(c, list) else c).strip() for c in completions]
        self.scored += len(texts)
        return [float(r[0]) for r in self.scorer.score(msgs, [[t] for t in texts])]


def online_dpo_steps(total_samples: int, global_batch_size: int) -> int:
    """Optimizer steps that generate ``total_samples`` samples (rounded up): 2 per prompt, one global batch per step."""
    if total_samples <= 0:
        raise ValueError(f"total_samples: must be > 0 (got {total_samples})")
    return math.ceil(total_samples / (GENERATIONS_PER_PROMPT * global_batch_size))


def run_online_dpo_peer(cfg: Config, run: RunDir, gold: GoldReward | None, total_samples: int, output_dir: Path) -> dict:
    """Train run/models/sft with OnlineDPOTrainer on the online loop's prompts, then evaluate it.

    Same prompts (data/iteration_1..T), reward model, sampling settings (``cfg.online``), beta,
    learning rate, schedule and batch (``cfg.dpo``) as our loop; the reference is the SFT model.
    The trained policy is saved to ``output_dir``. Returns gold reward, win rate vs SFT (gold,
    ties half; None without a toy world), proxy reward, mean length, KL to the SFT model,
    samples generated, optimizer updates, and wall seconds (``train_seconds`` of them training).
    """
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    start, o, d = time.time(), cfg.online, cfg.dpo
    if d.loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"dpo.loss_type: OnlineDPOTrainer supports sigmoid or ipo (got {d.loss_type!r})")
    sft_path = str(run.require("models/sft", "01_sft.ipynb", "sft"))
    sft_eval = json.loads(run.require("eval/sft.json", "04_online_iterative_dpo.ipynb", "eval:sft").read_text())["samples"]
    names = [f"iteration_{t}" for t in range(1, o.iterations + 1)]
    splits = load_splits(run, [*names, "eval_prompts"])
    tok = load_tokenizer(sft_path, cfg)
    # The loop's DPO drops over-long prompts (train_dpo); drop the same ones so both see the same prompts.
    prompts = concatenate_datasets([splits[n] for n in names])
    prompts = drop_long_prompts(prompts, tok, d.max_prompt_length, "peer prompts")
    scorer = RewardScorer.load(str(run.require("models/reward_model", "02_reward_model.ipynb", "reward_model")), cfg)
    reward = RewardModelReward(scorer)

    steps = online_dpo_steps(total_samples, d.global_batch_size)
    base = common_args(cfg, d, len(prompts), Path(output_dir).with_suffix(".trainer"))
    # max_steps overrides epochs: the prompt set is cycled until the sample budget is spent.
    base |= dict(max_steps=steps, warmup_steps=int(d.warmup_ratio * steps), logging_steps=max(1, steps // 40))
    args = OnlineDPOConfig(
        **base,
        beta=d.beta,
        loss_type=d.loss_type,
        max_length=d.max_length,  # prompt + completion for the log-prob pass (left-truncated beyond it)
        max_new_tokens=o.max_new_tokens,
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=0,  # HFGenerator samples with top_k=0 too (TRL's default is also 0)
    )
    trainer = OnlineDPOTrainer(
        model=load_causal_lm(sft_path, cfg),
        ref_model=None,  # TRL copies the starting (SFT) model, our loop's default reference
        reward_funcs=reward,
        args=args,
        train_dataset=prompts.select_columns(["prompt"]),
        processing_class=tok,
        peft_config=lora_config(cfg),
    )
    log = _fit(trainer, output_dir, None)  # train, merge LoRA, save atomically (same path as our DPO stages)
    updates = trainer.state.global_step

    # The one evaluation protocol (as evaluation.evaluate_checkpoint: same prompts, settings, seed, judge and
    # SFT reference): equal gold at a different KL is the interesting difference between the two schemes.
    policy = load_causal_lm(output_dir, cfg)
    summary, _ = evaluate_policy(cfg, policy, tok, splits["eval_prompts"], scorer, load_causal_lm(sft_path, cfg),
                                 gold=gold, baseline=pd.DataFrame(sft_eval))
    return {
        **summary,
        "samples_generated": reward.scored,  # counted at the reward function, not computed
        "updates": updates,
        "seconds": time.time() - start,
        "train_seconds": log.seconds,
    }
