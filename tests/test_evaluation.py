"""The evaluation protocol's numerics on small cases checked by hand."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_utils.evaluation import (gold_order_accuracy, kl_estimate, label_ceilings, lc_win_rate, offpolicy_distance,
                                   sequence_logprobs, summarize, win_rate)
from rlhf_utils.models import build_tokenizer


class FixedLogits(torch.nn.Module):
    """A 'language model' whose next-token logits are the same row at every position."""

    def __init__(self, row: torch.Tensor):
        super().__init__()
        self.row = row

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1).clone())


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(["tea", "good", "bad", "sun"])


def response_tokens(tok, prompt, response):
    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=True, return_dict=True)["input_ids"]
    return full[len(head):]


def test_logprob_of_a_uniform_model_is_minus_n_log_v(tok):
    prompt, responses = [{"role": "user", "content": "tea"}], ["good sun", "bad"]
    v = len(tok)
    got = sequence_logprobs(FixedLogits(torch.zeros(v)), tok, [prompt, prompt], responses, "cpu", batch_size=1)
    for value, r in zip(got, responses):
        n = len(response_tokens(tok, prompt, r))  # the words and the end token
        assert n == len(r.split()) + 1
        assert value == pytest.approx(-n * math.log(v), rel=1e-6)


def test_logprob_counts_only_the_response_tokens(tok):
    """Logits favour one word by a: each response token costs log p(token) = [token == word] a - log(e^a + V - 1)."""
    v, a, word = len(tok), 3.0, tok.convert_tokens_to_ids("good")
    row = torch.zeros(v)
    row[word] = a
    prompt = [{"role": "user", "content": "good good good"}]  # prompt tokens must not count
    (got,) = sequence_logprobs(FixedLogits(row), tok, [prompt], ["good bad"], "cpu")
    log_z = math.log(math.exp(a) + v - 1)
    assert got == pytest.approx((a - log_z) + (0 - log_z) + (0 - log_z), rel=1e-6)  # good, bad, end token


def test_offpolicy_distance_in_nats_per_token(tok):
    """Logits favour "good" by a: a token of "good" costs a - log Z, any other token (or the end) -log Z."""
    v, a, word = len(tok), 3.0, tok.convert_tokens_to_ids("good")
    row = torch.zeros(v)
    row[word] = a
    model, prompt, log_z = FixedLogits(row), [{"role": "user", "content": "tea"}], math.log(math.exp(a) + v - 1)
    (per_token,) = sequence_logprobs(model, tok, [prompt], ["good good bad"], "cpu", per_token=True)
    assert per_token == pytest.approx((2 * a - 4 * log_z) / 4, rel=1e-6)  # good, good, bad, end token
    own, other = ([prompt], ["good good good"]), ([prompt, prompt], ["bad sun bad", "sun"])
    d = offpolicy_distance(model, tok, own, other, "cpu")
    assert d["own_logprob_per_token"] == pytest.approx((3 * a - 4 * log_z) / 4, rel=1e-6)
    assert d["offline_logprob_per_token"] == pytest.approx(-log_z, rel=1e-6)
    assert d["offpolicy_distance"] == pytest.approx(3 * a / 4, rel=1e-6)
    assert offpolicy_distance(model, tok, own, own, "cpu")["offpolicy_distance"] == pytest.approx(0.0, abs=1e-9)


def test_label_ceilings_and_gold_order_by_hand():
    p = np.array([0.9, 0.6, 0.3])  # the annotator's probability of each label: the last label is its minority call
    ceilings = label_ceilings(p, np.array([0.8, 0.5, 0.2]), np.array([0.2, 0.5, 0.4]), ["a", "a", "b"])
    assert ceilings["annotator_self_agreement"] == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    assert ceilings["annotator_self_agreement_by_category"] == pytest.approx({"a": 0.75, "b": 0.7})
    assert ceilings["gold_label_agreement"] == pytest.approx((1 + 0.5 + 0) / 3)
    # Against the gold order, the tie (pair 2) is left out: the judge is right on pair 1, wrong on pair 3.
    assert gold_order_accuracy(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 1.0]),
                               np.array([0.8, 0.5, 0.2]), np.array([0.2, 0.5, 0.4])) == pytest.approx(0.5)


def test_kl_and_win_rate_by_hand():
    assert kl_estimate(np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -4.0, -3.0])) == pytest.approx(1.0)
    assert win_rate(np.array([0.9, 0.1, 0.5, 0.7]), np.array([0.2, 0.3, 0.5, 0.1])) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_lc_win_rate_by_hand():
    # Equal lengths: length explains nothing and the LC win rate is the raw one (ties count half).
    s, b = np.array([1.0, 1.0, 0.0, 0.5]), np.array([0.0, 0.0, 1.0, 0.5])
    assert lc_win_rate(s, b, np.full(4, 5), np.full(4, 5)) == pytest.approx(0.625, abs=1e-4)
    # Longer answers win 6 of 8, shorter ones 1 of 4: raw 7/12, but at equal length the
    # logistic fit (two groups at +c and -c) reads sigmoid(0) = 0.5.
    wins = np.array([1] * 6 + [0] * 2 + [1] + [0] * 3, float)
    lengths = np.array([6] * 8 + [4] * 4)
    assert win_rate(wins, 1 - wins) == pytest.approx(7 / 12)
    assert lc_win_rate(wins, 1 - wins, lengths, np.full(12, 5)) == pytest.approx(0.5, abs=1e-4)


def test_summarize_pairs_by_position_and_refuses_other_prompts():
    base = pd.DataFrame({"prompt": ["a", "b"], "proxy": [0.0, 0.0], "length": [3, 3], "logp": [-1.0, -1.0],
                         "ref_logp": [-1.0, -1.0], "gold": [0.5, 0.5]})
    model = base.assign(proxy=[1.0, -1.0], gold=[0.9, 0.5], logp=[-0.5, -1.5], ref_logp=[-1.0, -2.0])
    out = summarize(model, base)
    assert out["kl_to_ref"] == pytest.approx(0.5) and out["win_rate_vs_sft"] == pytest.approx(0.75)
    assert out["rm_win_rate_vs_sft"] == pytest.approx(0.5) and out["gold_reward"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="other eval prompts"):
        summarize(model, base.assign(prompt=["a", "c"]))
