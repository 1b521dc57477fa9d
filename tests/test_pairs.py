import pytest

from rlhf_utils.pairs import select_pairs

P = [{"role": "user", "content": "write positive about tea in 5 words with sun"}]


def pairs(rule, responses, rewards, **kw):
    args = dict(length_penalty=0.0, margin=0.0, seed=0) | kw
    return select_pairs([P] * len(responses), responses, rewards, rule, **args)


def test_max_min_picks_best_and_worst():
    rows, stats = pairs("max_min", [["a", "b", "c"]], [[0.1, 0.9, -0.5]])
    assert rows[0]["chosen"][0]["content"] == "b" and rows[0]["rejected"][0]["content"] == "c"
    assert rows[0]["reward_chosen"] == 0.9 and stats["pairs"] == 1


def test_max_random_and_random_are_ordered_by_reward():
    for rule in ("max_random", "random"):
        for seed in range(5):
            rows, _ = pairs(rule, [["a", "b", "c", "d"]], [[0.1, 0.9, -0.5, 0.3]], seed=seed)
            assert rows[0]["reward_chosen"] > rows[0]["reward_rejected"]
    rows, _ = pairs("max_random", [["a", "b", "c", "d"]], [[0.1, 0.9, -0.5, 0.3]])
    assert rows[0]["chosen"][0]["content"] == "b"


def test_length_penalised_max_min():
    responses = [["short", "a much much longer answer"]]
    rows, _ = pairs("max_min", responses, [[0.5, 0.6]])
    assert rows[0]["chosen"][0]["content"] == "a much much longer answer"
    rows, _ = pairs("max_min_p", responses, [[0.5, 0.6]], length_penalty=0.01)
    assert rows[0]["chosen"][0]["content"] == "short", "0.01 per character outweighs the 0.1 reward gap"


def test_ties_identical_margin_and_counts():
    rows, stats = pairs(
        "max_min",
        [["same", "same"], ["a", "b"], ["x", "y"], ["p", "q"]],
        [[0.2, 0.5], [0.3, 0.3], [0.0, 0.05], [0.0, 1.0]],
        margin=0.1,
    )
    assert stats == {"prompts": 4, "pairs": 1, "identical": 1, "tie": 1, "below_margin": 1, "too_few": 0}
    assert rows[0]["chosen"][0]["content"] == "q"


def test_bad_rule_and_penalty():
    with pytest.raises(ValueError, match="online.selection"):
        pairs("best", [["a", "b"]], [[0, 1]])
    with pytest.raises(ValueError, match="online.length_penalty"):
        pairs("max_min_p", [["a", "b"]], [[0, 1]], length_penalty=-1)
