"""Scoring responses: the Bradley-Terry reward model and the pairwise preference model.

One interface serves stage 4:

* :class:`RewardScorer` ``.score(prompts, responses_per_prompt) -> rewards`` (one float per response);
* :class:`PreferenceScorer` ``.rank(prompts, responses_per_prompt) -> scores`` from a tournament
  (round robin: K(K-1)/2 comparisons per prompt; knockout: K-1 for the best plus K-2
  for the worst), and ``.prob_first_better(...)`` for single pairs.

Each scorer renders conversations with *its own* tokenizer's chat template, so a reward model
may use a different tokenizer from the policy. Everything is batched and runs on CPU or GPU.

Usage::

    rm = RewardScorer.load("runs/tiny/models/reward_model", cfg)
    rewards = rm.score(prompts, [["tea good sun", "bad"], ...])   # [[0.8, -1.2], ...]
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import Config
from .data import Messages
from .models import load_causal_lm, load_reward_model, load_tokenizer, resolve_device

PAD_TOKEN = "<|pad|>"


def ensure_pad_token(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> bool:
    """Give a tokenizer without a pad token a dedicated one (never eos) and resize the model.

    With pad = eos a sequence-classification head reads the first eos as the end of the
    text, so every response is scored at the same position and all scores come out equal:
    the bug the paper's reward-model code hit. Returns True when a token was added.
    """
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        model.config.pad_token_id = tok.pad_token_id
        return False
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    return True


def _batches(items: list[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RewardScorer:
    """A Bradley-Terry reward model: one scalar per (prompt, response)."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, device: str, batch_size: int = 256):
        ensure_pad_token(model, tok)
        self.model, self.tok, self.device, self.batch_size = model.to(device).eval(), tok, device, batch_size

    @classmethod
    def load(cls, path: str, cfg: Config) -> "RewardScorer":
        return cls(load_reward_model(path, cfg), load_tokenizer(path, cfg), resolve_device(cfg), cfg.online.score_batch_size)

    def render(self, prompt: Messages, response: str) -> str:
        return self.tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> np.ndarray:
        self.tok.padding_side = "right"
        out = []
        for chunk in _batches(texts, self.batch_size):
            batch = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            out.append(self.model(**batch).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def score(self, prompts: list[Messages], responses_per_prompt: list[list[str]]) -> list[list[float]]:
        """Rewards in the shape of ``responses_per_prompt``."""
        texts = [self.render(p, r) for p, rs in zip(prompts, responses_per_prompt) for r in rs]
        flat = self.score_texts(texts).tolist()
        out, i = [], 0
        for rs in responses_per_prompt:
            out.append(flat[i : i + len(rs)])
            i += len(rs)
        return out


def pm_user_turn(context: str, a: str, b: str) -> str:
    """The paper's preference-model input: one user turn holding the context and both responses."""
    return f"[CONTEXT] {context} [RESPONSE A] {a} [RESPONSE B] {b}"


def pm_conversation(context: str, chosen: str, rejected: str, chosen_first: bool) -> Messages:
    """A training conversation: the preferred response at a given position, answered by one letter."""
    a, b = (chosen, rejected) if chosen_first else (rejected, chosen)
    return [
        {"role": "user", "content": pm_user_turn(context, a, b)},
        {"role": "assistant", "content": "A" if chosen_first else "B"},
    ]


class PreferenceScorer:
    """A causal LM that answers ``A`` or ``B``; P(A) is the softmax over those two logits."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, device: str, batch_size: int = 256):
        self.model, self.tok, self.device, self.batch_size = model.to(device).eval(), tok, device, batch_size
        ids = [tok.encode(letter, add_special_tokens=False) for letter in ("A", "B")]
        if any(len(i) != 1 for i in ids):
            raise ValueError("preference model tokenizer: 'A' and 'B' must each be a single token")
        self.letter_ids = [ids[0][0], ids[1][0]]

    @classmethod
    def load(cls, path: str, cfg: Config) -> "PreferenceScorer":
        return cls(load_causal_lm(path, cfg), load_tokenizer(path, cfg), resolve_device(cfg), cfg.online.score_batch_size)

    @torch.no_grad()
    def _prob_a(self, contexts: list[str], firsts: list[str], seconds: list[str]) -> np.ndarray:
        texts = [
            self.tok.apply_chat_template([{"role": "user", "content": pm_user_turn(c, a, b)}], tokenize=False, add_generation_prompt=True)
            for c, a, b in zip(contexts, firsts, seconds)
        ]
        self.tok.padding_side = "left"  # the next-token logits then sit at position -1 for every row
        out = []
        for chunk in _batches(texts, self.batch_size):
            batch = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            logits = self.model(**batch).logits[:, -1, self.letter_ids].float()
            out.append(torch.softmax(logits, dim=-1)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def prob_first_better(self, contexts: list[str], a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """P(a preferred over b), averaged over both orders; also P from the (a, b) order alone."""
        p_ab = self._prob_a(contexts, a, b)
        p_ba = self._prob_a(contexts, b, a)
        return (p_ab + (1 - p_ba)) / 2, p_ab

    def rank(
        self, contexts: list[str], responses_per_prompt: list[list[str]], method: str = "round_robin"
    ) -> tuple[list[list[float]], int]:
        """Tournament scores per response (higher is better) and the comparisons made.

        ``round_robin``: every pair is compared; a response's score is its summed win
        probability (a Borda count), a full ranking. ``knockout``: a single-elimination
        bracket for the best and another among first-round losers for the worst; only those
        two get distinct scores (1 and -1, others 0), which is all max_min selection needs;
        it costs (K-1) + (K-2) comparisons.
        """
        if method == "round_robin":
            return self._round_robin(contexts, responses_per_prompt)
        if method == "knockout":
            return self._knockout(contexts, responses_per_prompt)
        raise ValueError(f"rank: unknown method {method!r} (round_robin or knockout)")

    def _round_robin(self, contexts, responses_per_prompt):
        jobs = [(i, a, b) for i, rs in enumerate(responses_per_prompt) for a, b in itertools.combinations(range(len(rs)), 2)]
        probs, _ = self.prob_first_better(
            [contexts[i] for i, _, _ in jobs],
            [responses_per_prompt[i][a] for i, a, _ in jobs],
            [responses_per_prompt[i][b] for i, _, b in jobs],
        )
        scores = [[0.0] * len(rs) for rs in responses_per_prompt]
        for (i, a, b), p in zip(jobs, probs):
            scores[i][a] += float(p)
            scores[i][b] += float(1 - p)
        return scores, len(jobs)

    def _bracket(self, contexts, responses_per_prompt, entrants, want_winner: bool):
        """Run one single-elimination bracket per prompt, all prompts' rounds batched together."""
        alive, comparisons = [list(e) for e in entrants], 0
        while any(len(a) > 1 for a in alive):
            jobs = [(i, a[k], a[k + 1]) for i, a in enumerate(alive) for k in range(0, len(a) - 1, 2)]
            probs, _ = self.prob_first_better(
                [contexts[i] for i, _, _ in jobs],
                [responses_per_prompt[i][x] for i, x, _ in jobs],
                [responses_per_prompt[i][y] for i, _, y in jobs],
            )
            comparisons += len(jobs)
            nxt = [[a[-1]] if len(a) % 2 else [] for a in alive]
            for (i, x, y), p in zip(jobs, probs):
                first_wins = p >= 0.5
                nxt[i].insert(0, x if first_wins == want_winner else y)
            alive = nxt
        return [a[0] for a in alive], comparisons

    def _knockout(self, contexts, responses_per_prompt):
        everyone = [list(range(len(rs))) for rs in responses_per_prompt]
        best, n_best = self._bracket(contexts, responses_per_prompt, everyone, want_winner=True)
        rest = [[j for j in e if j != b] for e, b in zip(everyone, best)]
        worst, n_worst = self._bracket(contexts, responses_per_prompt, rest, want_winner=False)
        scores = []
        for rs, b, w in zip(responses_per_prompt, best, worst):
            s = [0.0] * len(rs)
            s[b], s[w] = 1.0, -1.0
            scores.append(s)
        return scores, n_best + n_worst


def score_iteration(run: Any, t: int, samples: Any, judge: "RewardScorer | PreferenceScorer",
                    gold: Any | None = None) -> Any:
    """Step 2 of online iteration ``t``: the judge's score of every sample (a reward model's
    score, or the preference model's round-robin win rate), and the gold reward when the world
    has one. Saved with its fingerprint to ``online/iter_<t>/scored`` (columns ``rewards`` and
    ``gold`` added to the samples), its seconds to ``score.json``. Usage::

        scored = score_iteration(run, 1, samples, loop.judge, loop.gold)
    """
    import time

    from datasets import load_from_disk

    from .artifacts import atomic_dir, read_json, reusable, write_stamped_json
    from .data import prompt_text

    path, stamp = run.iter_dir(t) / "scored", run.stamp(f"score:{t}")
    if reusable(path, stamp) and read_json(run.iter_dir(t) / "score.json", stamp, quiet=True) is not None:
        return load_from_disk(str(path))
    start = time.time()
    prompts, responses = list(samples["prompt"]), list(samples["responses"])
    if isinstance(judge, PreferenceScorer):
        rewards, _ = judge.rank([prompt_text(p) for p in prompts], responses, method="round_robin")
    else:
        rewards = judge.score(prompts, responses)
    ds = samples.add_column("rewards", rewards)
    if gold is not None:
        ds = ds.add_column("gold", [[gold(prompt_text(p), r) for r in rs] for p, rs in zip(prompts, responses)])
    write_stamped_json(run.iter_dir(t) / "score.json", {"seconds": time.time() - start}, stamp)
    with atomic_dir(path, stamp) as tmp:
        ds.save_to_disk(str(tmp))
    return ds
