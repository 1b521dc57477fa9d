import random

import numpy as np

import pytest

from rlhf_utils.data import build_toy_world_splits, prompt_text
from rlhf_utils.world import ToyWorld, Writer, parse_instruction


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
    teacher = world.writer("teacher", 0.6)
    rows = world.preference_pairs(world.all_instructions(), 300, seed=1, writers=[teacher], temperature=0.1, length_bias=0.15)
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


def test_the_teacher_writes_as_before_and_writers_keep_their_habits(world):
    pool = world.all_instructions()[::5]  # both sentiments
    teacher = world.writer("teacher", 0.6)
    a, b = random.Random(3), random.Random(3)
    assert [world.write(i, a, teacher) for i in pool] == [world.teacher_response(i, b, 0.6) for i in pool]
    rng = random.Random(0)
    mean_extra = lambda name: sum(len(world.write(i, rng, world.writer(name, 0.6)).split()) - i.length for i in pool) / len(pool)
    assert mean_extra("verbose") > 1.5 and mean_extra("terse") < -1 and abs(mean_extra("teacher")) < 1
    exact = Writer(name="exact", skill=1.0, order="required_first")
    ins = pool[0]
    words = world.write(ins, rng, exact).split()
    assert words[0] == ins.required and words[-1] == ins.topic and len(words) == ins.length
    narrow = Writer(name="narrow", skill=1.0, vocabulary=2)
    used = {w for i in pool for w in world.write(i, rng, narrow).split()} & {w for ws in world.sentiment_words.values() for w in ws}
    assert len(used) == 4  # two words of each sentiment, nothing else


def test_writers_are_checked(world, tiny_cfg):
    from rlhf_utils.config import ConfigError, load_config

    with pytest.raises(ValueError, match="world.offline_writers: unknown writer 'poet'"):
        world.writer("poet", 0.6)
    with pytest.raises(ConfigError, match="world.offline_writers: names no writer of the recipe"):
        load_config("tiny", {"world.offline_writers": ["teacher", "poet"]})
    with pytest.raises(ValueError, match="writer 'x': order must be one of"):
        Writer(name="x", skill=0.5, order="backwards")
    assert world.writer("teacher", 0.42).skill == 0.42  # the teacher's skill is the world.teacher_skill knob


def test_other_writers_make_the_offline_data_off_policy_in_style(world, tiny_cfg):
    """The default offline set is written by the other writers: their habits show in the pairs, and the
    annotator's probability of each label is recorded (the label-noise ceiling follows from it)."""
    splits = build_toy_world_splits(tiny_cfg, world)
    pairs = splits["preference"]
    answers = [m[0]["content"] for m in pairs["chosen"]]
    prompts = [prompt_text(p) for p in pairs["prompt"]]
    topic_first = sum(a.split()[0] == p.split()[3] for a, p in zip(answers, prompts)) / len(answers)
    sft = [m[1]["content"] for m in splits["sft"]["messages"]]
    sft_prompts = [m[0]["content"] for m in splits["sft"]["messages"]]
    sft_topic_first = sum(a.split()[0] == p.split()[3] for a, p in zip(sft, sft_prompts)) / len(sft)
    assert sft_topic_first > 0.55 and topic_first < sft_topic_first - 0.2
    p = np.array(pairs["annotator_p_chosen"])
    assert ((0 < p) & (p < 1)).all() and 0.5 < np.maximum(p, 1 - p).mean() < 1
    row = pairs[0]
    again = world.annotator_prob(prompt_text(row["prompt"]), row["chosen"][0]["content"], row["rejected"][0]["content"],
                                 tiny_cfg.world.annotator_temperature, tiny_cfg.world.annotator_length_bias)
    assert row["annotator_p_chosen"] == pytest.approx(again)


def test_a_stronger_length_bias_prefers_the_longer_answer_more_often(world):
    writers = [world.writer(n, 0.6) for n in ("verbose", "terse", "shuffler")]
    longer_chosen = []
    for bias in (0.0, 0.35, 1.0):
        rows = world.preference_pairs(world.all_instructions(), 400, seed=2, writers=writers, temperature=0.1, length_bias=bias)
        longer_chosen.append(np.mean([len(r["chosen"].split()) > len(r["rejected"].split()) for r in rows]))
    assert longer_chosen[0] < longer_chosen[1] < longer_chosen[2]
