import random

import pytest

from rlhf_utils.data import build_toy_world_splits, prompt_text
from rlhf_utils.world import ToyWorld, parse_instruction


@pytest.fixture(scope="module")
def world():
    return ToyWorld.from_recipe("toy_world")


PROMPT = "write positive about tea in 5 words with sun"


def test_gold_maximum_is_reachable(world):
    assert world.gold_reward(PROMPT, "tea good great nice sun") == pytest.approx(1.0)
    assert world.gold_reward(PROMPT, world.best_response(PROMPT)) == pytest.approx(1.0)
    for ins in world.all_instructions()[::97]:
        assert world.gold_reward(ins.text, world.best_response(ins.text)) == pytest.approx(1.0)


def test_gold_components(world):
    parts = world.gold_components(PROMPT, "tea bad bad")
    assert parts["topic"] == 1 and parts["required"] == 0 and parts["sentiment"] == 0
    assert parts["length"] == pytest.approx(1 - 2 / 5) and parts["distinct"] == pytest.approx(2 / 3)
    assert world.gold_reward(PROMPT, "") == 0
    # Padding a perfect answer with extra words lowers the gold reward: the length trap.
    assert world.gold_reward(PROMPT, "tea good great nice sun the the") < 1.0


def test_parse_instruction_round_trip(world):
    ins = world.all_instructions()[123]
    assert parse_instruction(ins.text) == ins
    with pytest.raises(ValueError, match="not a toy-world prompt"):
        parse_instruction("hello there")


def test_splits_are_disjoint_and_sized(world):
    pools = world.split_pool(n_eval=50, n_iteration=100, iterations=3, seed=0)
    texts = {name: {i.text for i in pool} for name, pool in pools.items()}
    names = list(texts)
    for a in names:
        for b in names:
            if a < b:
                assert not texts[a] & texts[b], f"{a} and {b} overlap"
    assert len(texts["eval"]) == 50 and len(texts["iteration_2"]) == 100
    with pytest.raises(ValueError, match="training prompts"):
        world.split_pool(n_eval=3000, n_iteration=100, iterations=3, seed=0)


def test_teacher_is_imperfect_and_skill_matters(world):
    rng = random.Random(0)
    pool = world.all_instructions()[:300]
    mean = lambda skill: sum(world.gold_reward(i.text, world.teacher_response(i, rng, skill)) for i in pool) / len(pool)
    low, mid, perfect = mean(0.2), mean(0.6), mean(1.0)
    assert low < mid < 0.8 and perfect > 0.95


def test_annotator_length_bias(world):
    good, padded = "tea good great nice sun", "tea good great nice sun the very"
    unbiased = world.annotator_prob(PROMPT, good, padded, temperature=0.1, length_bias=0.0)
    biased = world.annotator_prob(PROMPT, good, padded, temperature=0.1, length_bias=1.0)
    assert unbiased > 0.5 > biased


def test_preference_pairs_have_categories(world):
    rows = world.preference_pairs(world.all_instructions(), 300, seed=1, skill=0.6, temperature=0.1, length_bias=0.15)
    cats = {r["category"] for r in rows}
    assert cats == {"easy", "hard", "length_trap"}
    assert all(r["chosen"] != r["rejected"] for r in rows)
    agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in rows) / len(rows)
    assert 0.6 < agree < 0.98, "labels are noisy, but mostly follow the gold reward"


def test_toy_splits_deterministic_and_in_trl_format(world, tiny_cfg):
    a = build_toy_world_splits(tiny_cfg, world)
    b = build_toy_world_splits(tiny_cfg, world)
    assert a["sft"]["messages"] == b["sft"]["messages"]
    assert a["preference"]["chosen"] == b["preference"]["chosen"]
    msg = a["sft"][0]["messages"]
    assert [m["role"] for m in msg] == ["user", "assistant"]
    row = a["preference"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    evals = {prompt_text(p) for p in a["eval_prompts"]["prompt"]}
    trains = {m[0]["content"] for m in a["sft"]["messages"]}
    iters = {prompt_text(p) for p in a["iteration_1"]["prompt"]}
    assert not evals & trains and not evals & iters and not iters & trains
