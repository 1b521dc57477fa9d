"""The benchmarks' own questions: adapters, recipe checks, the two-turn answering and the answer files."""

import json

import pytest

from rlhf_utils.benchmarks import MT_BENCH_TEMPERATURE, _answer, write_mt_bench
from rlhf_utils.config import ConfigError, load_config
from rlhf_utils.recipes import RowError, adapt_alpaca_eval_questions, adapt_mt_bench_questions, validate_mixture

MT = {"prompt": ["Write a haiku about tea.", "Now make it rhyme."], "prompt_id": 81, "category": "writing",
      "reference": []}


def test_adapters_read_each_benchmark_schema():
    row = {"instruction": "Name three rivers.", "output": "ref", "generator": "gpt4", "dataset": "koala"}
    assert adapt_alpaca_eval_questions(row) == {"question_id": None, "turns": ["Name three rivers."], "category": "koala"}
    assert adapt_mt_bench_questions(MT) == {"question_id": 81, "turns": MT["prompt"], "category": "writing"}
    with pytest.raises(RowError, match=r"field 'prompt\[1\]': expected non-empty text"):
        adapt_mt_bench_questions(MT | {"prompt": ["a", ""]})
    with pytest.raises(RowError, match="field 'prompt_id': expected an integer"):
        adapt_mt_bench_questions(MT | {"prompt_id": "81"})


def test_a_recipe_names_each_benchmark_with_its_own_adapter(tmp_path):
    ok = {"alpaca_eval": {"dataset": "tatsu-lab/alpaca_eval", "data_file": "alpaca_eval.json", "split": "train",
                          "adapter": "alpaca_eval_questions"}}
    recipe = {"kind": "mixture", "eval_prompts": [{"dataset": "x/y", "split": "train", "adapter": "context_messages"}]}
    assert validate_mixture(recipe | {"benchmarks": ok}, "r", tmp_path)["benchmarks"]["alpaca_eval"]["data_file"] == "alpaca_eval.json"
    with pytest.raises(ConfigError, match="r: benchmarks: unknown benchmark 'arena_hard'"):
        validate_mixture(recipe | {"benchmarks": {"arena_hard": ok["alpaca_eval"]}}, "r", tmp_path)
    with pytest.raises(ConfigError, match="r: benchmarks.mt_bench.adapter: must be mt_bench_questions"):
        validate_mixture(recipe | {"benchmarks": {"mt_bench": ok["alpaca_eval"]}}, "r", tmp_path)
    with pytest.raises(ConfigError, match="benchmarks.alpaca_eval.num_samples: a benchmark is answered whole"):
        validate_mixture(recipe | {"benchmarks": {"alpaca_eval": ok["alpaca_eval"] | {"num_samples": 5}}}, "r", tmp_path)


class Echo:
    """A generator that answers with what it was asked, the turn count and the temperature."""

    new_tokens = 0

    def __init__(self):
        self.calls = []

    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed, progress=True, tag="generate"):
        self.calls.append((tag, temperature, len(prompts)))
        return [[f"{p[-1]['content']} | {len(p)} msgs | T={temperature}"] * n for p in prompts]


def test_the_second_turn_follows_the_models_own_first_answer_at_fastchats_temperature():
    cfg = load_config("tiny")
    questions = [adapt_mt_bench_questions(MT), adapt_mt_bench_questions(MT | {"prompt_id": 82, "category": "math",
                                                                              "prompt": ["2+2?"]})]
    gen = Echo()
    answers = _answer(gen, "mt_bench", questions, cfg, "sft:mt_bench")
    assert answers[0] == ["Write a haiku about tea. | 1 msgs | T=0.7", "Now make it rhyme. | 3 msgs | T=0.7"]
    assert answers[1] == [f"2+2? | 1 msgs | T={MT_BENCH_TEMPERATURE['math']}"], "a one-turn question gets one answer"
    assert [c[0] for c in gen.calls] == ["sft:mt_bench:turn1@T=0.0", "sft:mt_bench:turn1@T=0.7", "sft:mt_bench:turn2@T=0.7"]


def test_mt_bench_answer_file_is_fastchats(tmp_path):
    path = write_mt_bench([81, 82], [["a1", "a2"], ["b1"]], "colab_t4-iter_3", tmp_path / "m.jsonl", 1.5)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"question_id": 81, "answer_id": "colab_t4-iter_3-81", "model_id": "colab_t4-iter_3",
                     "choices": [{"index": 0, "turns": ["a1", "a2"]}], "tstamp": 1.5}


def test_greedy_at_temperature_zero(tiny_cfg):
    from rlhf_utils.generation import HFGenerator
    from rlhf_utils.models import build_tiny_causal_lm, build_tokenizer
    from rlhf_utils.world import ToyWorld

    tok = build_tokenizer(ToyWorld.from_recipe().vocabulary())
    gen = HFGenerator(build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0), tok, "cpu", batch_size=8)
    p = [[{"role": "user", "content": "write positive about tea in 5 words with sun"}]]
    a = gen.generate(p, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, seed=1, progress=False)
    assert a == gen.generate(p, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, seed=2, progress=False)
