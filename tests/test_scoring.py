import numpy as np
import pytest

from rlhf_utils.data import clean_preferences
from rlhf_utils.evaluation import pairwise_accuracy, ranking_agreement
from rlhf_utils.models import build_tiny_causal_lm, build_tiny_reward_model, build_tokenizer
from rlhf_utils.scoring import PreferenceScorer, RewardScorer, ensure_pad_token, pm_conversation
from rlhf_utils.world import ToyWorld
from datasets import Dataset

PROMPT = [{"role": "user", "content": "write positive about tea in 5 words with sun"}]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ToyWorld.from_recipe().vocabulary())


def test_reward_scorer_shapes_and_batching(tok, tiny_cfg):
    rm = build_tiny_reward_model(tiny_cfg.models.tiny, tok, seed=0)
    responses = [["tea good sun", "bad"], ["nice", "tea", "sun sun"]]
    small = RewardScorer(rm, tok, "cpu", batch_size=2).score([PROMPT, PROMPT], responses)
    big = RewardScorer(rm, tok, "cpu", batch_size=64).score([PROMPT, PROMPT], responses)
    assert [len(x) for x in small] == [2, 3]
    assert np.allclose(np.concatenate(small), np.concatenate(big), atol=1e-5), "padding must not change a score"


def test_pad_equal_to_eos_gets_a_dedicated_token(tok, tiny_cfg):
    rm = build_tiny_reward_model(tiny_cfg.models.tiny, tok, seed=0)
    from tokenizers import Tokenizer

    # A copy of the tokenizer whose pad token is eos: the configuration behind the paper's bug.
    core = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    tok2 = tok.__class__(tokenizer_object=core, eos_token=tok.eos_token, pad_token=tok.eos_token)
    assert tok2.pad_token_id == tok2.eos_token_id
    assert ensure_pad_token(rm, tok2) is True
    assert tok2.pad_token_id != tok2.eos_token_id and rm.config.pad_token_id == tok2.pad_token_id
    assert rm.get_input_embeddings().weight.shape[0] == len(tok2)
    assert ensure_pad_token(rm, tok2) is False


def test_preference_scorer_order_average_and_tournaments(tok, tiny_cfg):
    pm = PreferenceScorer(build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0), tok, "cpu", batch_size=16)
    ctx = [PROMPT[0]["content"]] * 3
    a, b = ["tea good sun", "bad", "nice"], ["bad", "tea good sun", "nice nice"]
    both, first_order = pm.prob_first_better(ctx, a, b)
    swapped, _ = pm.prob_first_better(ctx, b, a)
    assert np.allclose(both, 1 - swapped, atol=1e-6), "the order-averaged probability is antisymmetric"
    assert ((first_order >= 0) & (first_order <= 1)).all()
    cands = [["tea", "sun", "good", "bad", "nice"]] * 2
    rr, n_rr = pm.rank(ctx[:2], cands, "round_robin")
    ko, n_ko = pm.rank(ctx[:2], cands, "knockout")
    assert n_rr == 2 * 10 and n_ko == 2 * (4 + 3)
    assert all(sorted(s)[0] == -1 and sorted(s)[-1] == 1 for s in ko)
    assert np.allclose([sum(s) for s in rr], 10), "round-robin win probabilities sum to the number of games"
    with pytest.raises(ValueError, match="unknown method"):
        pm.rank(ctx[:2], cands, "swiss")


def test_pm_conversation_positions():
    first = pm_conversation("ctx", "good", "bad", chosen_first=True)
    second = pm_conversation("ctx", "good", "bad", chosen_first=False)
    assert first[0]["content"] == "[CONTEXT] ctx [RESPONSE A] good [RESPONSE B] bad" and first[1]["content"] == "A"
    assert second[0]["content"] == "[CONTEXT] ctx [RESPONSE A] bad [RESPONSE B] good" and second[1]["content"] == "B"


def test_pm_training_orders():
    """``random``: one conversation per pair, preferred answer at a seeded random position (the paper);
    ``both``: each pair once in each order, so the position says nothing about the answer."""
    from rlhf_utils.trainers import preference_model_dataset

    msg = lambda t: [{"role": "assistant", "content": t}]
    pairs = Dataset.from_dict({"prompt": [PROMPT] * 40, "chosen": [msg(f"good {i}") for i in range(40)],
                               "rejected": [msg("bad")] * 40})
    one = preference_model_dataset(pairs, seed=0)
    assert len(one) == 40 and one["messages"] == preference_model_dataset(pairs, seed=0)["messages"]
    letters = [m[-1]["content"] for m in one["messages"]]
    assert 10 < letters.count("A") < 30
    both = preference_model_dataset(pairs, seed=0, orders="both")
    assert len(both) == 80 and [m[-1]["content"] for m in both["messages"]] == ["A", "B"] * 40
    assert both[1]["messages"][0]["content"].endswith("[RESPONSE B] good 0")


def test_clean_preferences_filters_with_counts(capsys):
    msg = lambda t: [{"role": "assistant", "content": t}]
    ds = Dataset.from_dict({
        "prompt": [PROMPT] * 4,
        "chosen": [msg("a"), msg(""), msg("same"), msg("b")],
        "rejected": [msg("x"), msg("y"), msg("same"), msg("c")],
    })
    out = clean_preferences(ds, "prefs")
    assert len(out) == 2
    printed = capsys.readouterr().out
    assert "prefs: dropped 1 rows with a missing or empty" in printed and "dropped 1 rows whose chosen and rejected" in printed
    with pytest.raises(ValueError, match="prefs: missing column"):
        clean_preferences(ds.remove_columns("rejected"), "prefs")


def test_accuracy_and_ranking_metrics():
    acc, by = pairwise_accuracy(np.array([2.0, 1.0, 0.5]), np.array([1.0, 1.0, 0.9]), ["a", "a", "b"])
    assert acc == pytest.approx(0.5) and by == {"a": 0.75, "b": 0.0}
    agree = ranking_agreement([[3, 2, 1]], [[0.9, 0.5, 0.1]])
    assert agree["spearman"] == pytest.approx(1.0) and agree["picked_best_gold"] == 0.9 and agree["picked_worst_gold"] == 0.1
    assert agree["oracle_best_gold"] == 0.9 and agree["oracle_worst_gold"] == 0.1
    reversed_judge = ranking_agreement([[1, 2, 3]], [[0.9, 0.5, 0.1]])
    assert reversed_judge["spearman"] == pytest.approx(-1.0) and reversed_judge["picked_best_gold"] == 0.1


def test_long_prompts_dropped_with_count(tok, capsys):
    from rlhf_utils.trainers import drop_long_prompts

    short = [{"role": "user", "content": "write positive about tea in 5 words with sun"}]
    long = [{"role": "user", "content": " ".join(["tea"] * 40)}]
    ds = Dataset.from_dict({"prompt": [short, long, short]})
    out = drop_long_prompts(ds, tok, 24, "pairs")
    assert len(out) == 2 and "pairs: dropped 1 rows with prompts longer than 24 tokens" in capsys.readouterr().out


def test_scorer_tokenizer_must_cover_policy_text(tok):
    from rlhf_utils.online import check_tokenizer_covers

    check_tokenizer_covers(tok, ["tea good sun"], "reward model")
    with pytest.raises(ValueError, match="reward model: its tokenizer cannot represent"):
        check_tokenizer_covers(tok, ["tea gooood sun"], "reward model")
