"""Measuring policies: the one evaluation protocol, and the numbers it is made of.

Every policy (the SFT model, each online iteration, offline DPO, TRL's online peer) is measured
by :func:`evaluate_policy`, and every comparison table is made from its frames by
:func:`summarize`. The gold reward is an optional function ``gold(instruction, response)``:
the toy world's, or None for hub data.

Usage::

    summary, frame = evaluate_policy(cfg, policy, tok, splits["eval_prompts"], judge=rm, reference=sft_model,
                                     gold=world.gold_reward, baseline=sft_frame)
    summary["win_rate_vs_sft"], frame[["prompt", "response", "proxy", "gold"]]
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch
import pandas as pd
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config
from .data import prompt_text
from .generation import HFGenerator
from .models import resolve_device
from .seeds import seed_for
from .world import ToyWorld, parse_instruction

GoldReward = Callable[[str, str], float]  # (instruction, response) -> the true reward; the toy world's


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
        seed=seed_for(cfg.runtime.seed, "eval_sampling", seed_offset),
    )
    rows = [
        {"prompt": prompt_text(p), "response": r}
        for p, rs in zip(prompts["prompt"], responses)
        for r in rs
    ]
    return pd.DataFrame(rows)


def gold_scores(gold: GoldReward, frame: pd.DataFrame) -> np.ndarray:
    """The gold reward of every (prompt, response) row."""
    return np.array([gold(p, r) for p, r in zip(frame["prompt"], frame["response"])])


def evaluate_policy(
    cfg: Config, policy: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Dataset, judge: Any,
    reference: PreTrainedModel, gold: GoldReward | None = None, generator: Any | None = None,
    baseline: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Sample the held-out prompts and measure the answers; returns ``(summary, frame)``.

    Answers come from :func:`sample_eval` (the eval settings and seed, the same for every model,
    so differences come from the weights; ``generator``: the rollout's backend). Each answer gets
    the judge's score (``proxy``, a reward model's ``score``), its length in words, its
    log-probability under the policy and under ``reference`` (for the KL estimate) and, with
    ``gold``, its gold reward. The summary is :func:`summarize` of the frame against ``baseline``.
    """
    frame = sample_eval(policy, tok, prompts, cfg, generator=generator)
    messages = [[{"role": "user", "content": p}] for p in frame["prompt"]]
    responses = list(frame["response"])
    frame["proxy"] = np.concatenate(judge.score(messages, [[r] for r in responses]))
    frame["length"] = frame["response"].str.split().str.len()
    device, batch = resolve_device(cfg), cfg.online.score_batch_size
    frame["logp"] = sequence_logprobs(policy, tok, messages, responses, device, batch)
    frame["ref_logp"] = frame["logp"] if reference is policy else sequence_logprobs(reference, tok, messages, responses, device, batch)
    if gold is not None:
        frame["gold"] = gold_scores(gold, frame)
    return summarize(frame, baseline), frame


def summarize(frame: pd.DataFrame, baseline: pd.DataFrame | None = None) -> dict[str, float]:
    """One model's numbers from its eval frame: proxy and gold reward, length, KL to the
    reference; with ``baseline`` (the SFT model's frame, paired by position) the gold,
    length-controlled and judge's win rates against it."""
    out = {
        "proxy_reward": float(frame["proxy"].mean()),
        "mean_length": float(frame["length"].mean()),
        "kl_to_ref": kl_estimate(frame["logp"].to_numpy(), frame["ref_logp"].to_numpy()),
    }
    has_gold = "gold" in frame
    if has_gold:
        out["gold_reward"] = float(frame["gold"].mean())
    if baseline is not None:
        if list(frame["prompt"]) != list(baseline["prompt"]):
            raise ValueError("the baseline was sampled on other eval prompts; a win rate would pair unrelated samples")
        if has_gold:
            gold, base = frame["gold"].to_numpy(), baseline["gold"].to_numpy()
            out["win_rate_vs_sft"] = win_rate(gold, base)
            out["lc_win_rate_vs_sft"] = lc_win_rate(gold, base, frame["length"].to_numpy(), baseline["length"].to_numpy())
        out["rm_win_rate_vs_sft"] = win_rate(frame["proxy"].to_numpy(), baseline["proxy"].to_numpy())
    return out


def teacher_frame(world: ToyWorld, prompts: Dataset, cfg: Config) -> pd.DataFrame:
    """The teacher's own answers to the evaluation prompts: the level SFT imitates."""
    rng = random.Random(seed_for(cfg.runtime.seed, "teacher_answers"))
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


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray,
                      categories: list[str] | None) -> tuple[float, dict[str, float]]:
    """Share of pairs where the chosen side scores higher (a tie counts half), overall and per
    category (none for ``categories=None``: hub pairs carry no category)."""
    hit = (chosen > rejected) + 0.5 * (chosen == rejected)
    if categories is None:
        return float(hit.mean()), {}
    cats = np.asarray(categories)
    return float(hit.mean()), {c: float(hit[cats == c].mean()) for c in sorted(set(categories))}


def label_ceilings(p_chosen: np.ndarray, gold_chosen: np.ndarray, gold_rejected: np.ndarray,
                   categories: list[str]) -> dict[str, Any]:
    """What the noisy labels allow, overall and per category (toy world: the annotator's probabilities known).

    ``annotator_self_agreement``: the mean of max(p, 1 - p), with p the probability that the annotator
    picks the chosen side: how often a second label from the same annotator would agree with the
    first, the true ceiling of accuracy against these labels (no judge can expect more).
    ``gold_label_agreement``: how often the gold reward's order agrees with the labels (not a
    ceiling: a judge that shares the annotator's length taste can beat it).
    """
    p = np.asarray(p_chosen, float)
    self_agreement = np.maximum(p, 1 - p)
    cats = np.asarray(categories)
    gold_acc, gold_by = pairwise_accuracy(np.asarray(gold_chosen), np.asarray(gold_rejected), categories)
    return {
        "annotator_self_agreement": float(self_agreement.mean()),
        "annotator_self_agreement_by_category": {c: float(self_agreement[cats == c].mean()) for c in sorted(set(categories))},
        "gold_label_agreement": gold_acc,
        "gold_label_agreement_by_category": gold_by,
    }


def gold_order_accuracy(chosen: np.ndarray, rejected: np.ndarray, gold_chosen: np.ndarray, gold_rejected: np.ndarray) -> float:
    """Share of pairs the gold reward does not tie where a judge's scores order the two answers as the gold
    reward does (which answer really is better: what the online loop needs, more than the labels)."""
    truth = np.sign(np.asarray(gold_chosen) - np.asarray(gold_rejected))
    decided = truth != 0
    return float((np.sign(np.asarray(chosen) - np.asarray(rejected))[decided] == truth[decided]).mean())


def length_correlation(scores: np.ndarray, texts: list[str]) -> float:
    """Pearson correlation of a score with response length in words."""
    lengths = np.array([len(t.split()) for t in texts], dtype=float)
    return float(np.corrcoef(scores, lengths)[0, 1])


def ranking_agreement(scores: list[list[float]], gold: list[list[float]]) -> dict[str, float]:
    """How well a ranking of K candidates per prompt follows the gold reward.

    ``spearman``: mean rank correlation with the gold order (prompts where either side is
    constant are skipped); ``picked_best_gold`` / ``picked_worst_gold``: mean gold reward of the
    candidate the judge ranks first / last, beside the truly best and worst candidates'
    ``oracle_best_gold`` / ``oracle_worst_gold`` (what a perfect judge would pick).
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
        "picked_best_gold": float(np.mean(best)),
        "picked_worst_gold": float(np.mean(worst)),
        "oracle_best_gold": float(np.mean([max(g) for g in gold])),
        "oracle_worst_gold": float(np.mean([min(g) for g in gold])),
    }


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[list[dict]], responses: list[str],
    device: str, batch_size: int = 256, per_token: bool = False,
) -> np.ndarray:
    """log pi(y | x) summed over the response tokens (its end token included), one per pair;
    ``per_token``: divided by the number of those tokens.

    TRL's ``selective_log_softmax`` gathers each token's log-probability without materialising
    a second batch x length x vocabulary tensor (the full ``log_softmax`` would, and with a
    150K-token vocabulary that is the memory of this pass)."""
    from trl.trainer.utils import selective_log_softmax

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
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (B, T, V)
        token_logp = selective_log_softmax(logits[:, :-1], ids[:, 1:].to(device)).cpu()  # (B, T-1): log p(token t+1)
        for j, s in enumerate(chunk):
            span = token_logp[j, first[j] - 1 : len(s) - 1]
            out.append(float(span.mean() if per_token else span.sum()))
    return np.array(out)


def offpolicy_distance(model: PreTrainedModel, tok: PreTrainedTokenizerBase, own: tuple[list, list[str]],
                       other: tuple[list, list[str]], device: str, batch_size: int = 256) -> dict[str, float]:
    """How far ``other`` answers lie from a policy, in the policy's own eyes: its mean log-likelihood
    per token of its own samples minus that of the other answers, in nats per token. About 0 when
    the other answers could have been its own; the larger, the more off-policy they are.
    ``own`` and ``other``: (conversational prompts, responses). Usage::

        d = offpolicy_distance(sft_model, tok, (prompts, sft_samples), (pair_prompts, pair_answers), "cpu")
        d["offpolicy_distance"]
    """
    own_lp = float(sequence_logprobs(model, tok, *own, device, batch_size, per_token=True).mean())
    other_lp = float(sequence_logprobs(model, tok, *other, device, batch_size, per_token=True).mean())
    return {"own_logprob_per_token": own_lp, "offline_logprob_per_token": other_lp, "offpolicy_distance": own_lp - other_lp}


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


def evaluate_checkpoint(run: Any, name: str, model_path: str, loop: Any) -> dict[str, Any]:
    """Step 5: :func:`evaluate_policy` of one saved model on the held-out prompts, with the run's
    judge of record (the reward model), the SFT model as KL reference and, for every model but
    the SFT one, win rates against the SFT model's samples. Saved with its fingerprint to
    ``eval/<name>.json`` (summary and every sample); reused when made with the same settings.
    ``loop``: the :class:`rlhf_utils.online.LoopInputs` (tokenizer, prompts, reward model, gold).
    Usage::

        summary = evaluate_checkpoint(run, "iter_1", run.policy_path(1), loop)
    """
    import time

    from .artifacts import read_json, write_stamped_json
    from .generation import make_generator
    from .models import load_causal_lm

    path, stamp, cfg = run / f"eval/{name}.json", run.stamp(f"eval:{name}"), run.cfg
    if (done := read_json(path, stamp)) is not None:
        return done["summary"]
    start = time.time()
    model = load_causal_lm(model_path, cfg)
    # The rollout's backend (vLLM or shards where configured; else HF generate on `model`).
    gen = make_generator(cfg, model_path, model, loop.tok, work_dir=run / f"eval/{name}.shards", config_path=run / "config.yaml")
    sft_path = run.policy_path(0)
    ref = model if model_path == sft_path else load_causal_lm(sft_path, cfg)
    baseline = None if name == "sft" else eval_frame(run, "sft")
    summary, frame = evaluate_policy(cfg, model, loop.tok, loop.eval_prompts, loop.rm, ref, loop.gold,
                                     generator=gen, baseline=baseline)
    summary["eval_seconds"] = time.time() - start
    write_stamped_json(path, {"summary": summary, "samples": frame.to_dict(orient="records")}, stamp)
    return summary


def eval_frame(run: Any, name: str) -> pd.DataFrame:
    """Every held-out sample of one evaluated model (``eval/<name>.json``), one row each."""
    import json

    return pd.DataFrame(json.loads((run / f"eval/{name}.json").read_text())["samples"])
