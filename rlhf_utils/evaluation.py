"""Measuring policies against the toy world's gold reward.

Usage::

    sampled = sample_eval(policy, tok, splits["eval_prompts"], cfg)
    gold = gold_scores(world, sampled)          # one gold reward per (prompt, response)
    float(np.mean(gold))
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import pandas as pd
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config
from .data import prompt_text
from .generation import HFGenerator
from .world import ToyWorld, parse_instruction


def sample_eval(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Dataset, cfg: Config, seed_offset: int = 0,
    generator: Any | None = None,
) -> pd.DataFrame:
    """Sample ``eval.samples_per_prompt`` responses per evaluation prompt with the eval settings.

    Every model is sampled with the same settings and seed, so their differences come from
    the weights alone. Returns one row per (prompt, response). ``generator`` replaces HF
    ``generate`` on ``model`` (the online loop passes its vLLM or sharded backend).
    """
    e = cfg.eval
    gen = generator or HFGenerator.from_config(model, tok, cfg)
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


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray, categories: list[str]) -> tuple[float, dict[str, float]]:
    """Share of pairs where the chosen side scores higher (a tie counts half), overall and per category."""
    hit = (chosen > rejected) + 0.5 * (chosen == rejected)
    cats = np.asarray(categories)
    return float(hit.mean()), {c: float(hit[cats == c].mean()) for c in sorted(set(categories))}


def length_correlation(scores: np.ndarray, texts: list[str]) -> float:
    """Pearson correlation of a score with response length in words."""
    lengths = np.array([len(t.split()) for t in texts], dtype=float)
    return float(np.corrcoef(scores, lengths)[0, 1])


def ranking_agreement(scores: list[list[float]], gold: list[list[float]]) -> dict[str, float]:
    """How well a ranking of K candidates per prompt follows the gold reward.

    ``spearman``: mean rank correlation with the gold order (prompts where either side is
    constant are skipped); ``best_gold`` / ``worst_gold``: mean gold reward of the candidate
    ranked first / last, beside the oracle's ``gold_best`` / ``gold_worst``.
    """
    rhos, best, worst = [], [], []
    for s, g in zip(scores, gold):
        s, g = np.asarray(s, float), np.asarray(g, float)
        best.append(g[np.argmax(s)])
        worst.append(g[np.argmin(s)])
        if s.std() > 0 and g.std() > 0:
            rs, rg = pd.Series(s).rank().to_numpy(), pd.Series(g).rank().to_numpy()
            rhos.append(np.corrcoef(rs, rg)[0, 1])
    return {
        "spearman": float(np.mean(rhos)) if rhos else float("nan"),
        "best_gold": float(np.mean(best)),
        "worst_gold": float(np.mean(worst)),
        "gold_best": float(np.mean([max(g) for g in gold])),
        "gold_worst": float(np.mean([min(g) for g in gold])),
    }


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[list[dict]], responses: list[str],
    device: str, batch_size: int = 256,
) -> np.ndarray:
    """log pi(y | x) summed over the response tokens (its end token included), one per pair."""
    model.to(device).eval()
    seqs, starts = [], []
    for p, r in zip(prompts, responses):
        head = tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tok.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=True, return_dict=True)["input_ids"]
        seqs.append(full)
        starts.append(len(head))
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk, first = seqs[i : i + batch_size], starts[i : i + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, : len(s)], mask[j, : len(s)] = torch.tensor(s), 1
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()  # (B, T-1)
        for j, s in enumerate(chunk):
            out.append(float(token_logp[j, first[j] - 1 : len(s) - 1].sum()))
    return np.array(out)


def kl_estimate(policy_logp: np.ndarray, ref_logp: np.ndarray) -> float:
    """Monte-Carlo KL(pi || ref) from samples of pi: mean of log pi(y|x) - log ref(y|x)."""
    return float(np.mean(policy_logp - ref_logp))


def win_rate(scores: np.ndarray, baseline: np.ndarray) -> float:
    """Share of paired samples where ``scores`` beats ``baseline``; ties count half."""
    return float(np.mean((scores > baseline) + 0.5 * (scores == baseline)))


def lc_win_rate(scores: np.ndarray, baseline: np.ndarray, lengths: np.ndarray, baseline_lengths: np.ndarray) -> float:
    """Length-controlled win rate, in the spirit of AlpacaEval 2 (Dubois et al., 2024, arXiv 2404.04475).

    A logistic model of the win on the normalised length difference, ``P(win) = sigmoid(a + b *
    tanh(dlen / std(dlen)))``, fitted with scikit-learn (ties count as half a win and half a
    loss), and read at zero length difference: ``sigmoid(a)``. A model that wins only by being
    longer than the baseline gets its win rate pulled back towards 0.5.
    """
    from sklearn.linear_model import LogisticRegression

    dlen = np.asarray(lengths, float) - np.asarray(baseline_lengths, float)
    x = np.tanh(dlen / (dlen.std() or 1.0))[:, None]
    win = (scores > baseline).astype(float) + 0.5 * (scores == baseline)
    # Each sample enters twice, as a win weighted by its win share and as a loss weighted by the rest.
    X, y, w = np.vstack([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))], np.r_[win, 1 - win]
    keep = w > 0
    if len(set(y[keep])) < 2:  # all wins or all losses: nothing for length to explain
        return float(win.mean())
    model = LogisticRegression(C=np.inf).fit(X[keep], y[keep], sample_weight=w[keep])
    return float(1 / (1 + np.exp(-model.intercept_[0])))
