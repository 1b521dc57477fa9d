from types import SimpleNamespace

import pytest

from rlhf_utils.generation import (
    HFGenerator,
    ShardedGenerator,
    convert_vllm_outputs,
    count_vllm_tokens,
    make_generator,
    render_prompts,
    shard_bounds,
    shard_gpus,
    vllm_available,
    vllm_requests,
    vllm_sampling_kwargs,
)
from rlhf_utils.models import build_tiny_causal_lm, build_tokenizer
from rlhf_utils.world import ToyWorld

P = [{"role": "user", "content": "write positive about tea in 5 words with sun"}]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ToyWorld.from_recipe().vocabulary())


def test_hf_generator_schema_and_seed(tok, tiny_cfg):
    model = build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0)
    gen = HFGenerator(model, tok, "cpu", batch_size=8)
    a = gen.generate([P, P, P], n=4, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1, progress=False)
    b = gen.generate([P, P, P], n=4, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1, progress=False)
    c = gen.generate([P, P, P], n=4, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=2, progress=False)
    assert [len(x) for x in a] == [4, 4, 4] and all(isinstance(s, str) for x in a for s in x)
    assert a == b and a != c
    assert tok.padding_side == "right", "the generator restores the tokenizer's padding side"


def test_vllm_request_building_and_output_conversion(tok):
    assert render_prompts(tok, [P]) == ["<|user|> write positive about tea in 5 words with sun <|assistant|> "]
    # Token ids, not text: vLLM would add a second BOS to a chat template that already has one.
    hf_ids = tok(render_prompts(tok, [P]), add_special_tokens=False)["input_ids"]
    assert vllm_requests(tok, [P, P]) == [{"prompt_token_ids": hf_ids[0]}] * 2
    assert vllm_sampling_kwargs(8, 1.0, 1.0, 2048, 42) == {
        "n": 8, "temperature": 1.0, "top_p": 1.0, "max_tokens": 2048, "seed": 42,
    }
    fake = [SimpleNamespace(outputs=[SimpleNamespace(text=" tea good "), SimpleNamespace(text="sun")]),
            SimpleNamespace(outputs=[SimpleNamespace(text="bad")])]
    assert convert_vllm_outputs(fake) == [["tea good", "sun"], ["bad"]]


def test_backend_choice_on_cpu(tok, tiny_cfg, tmp_path):
    from rlhf_utils.config import load_config

    assert not vllm_available()
    cfg = load_config("tiny", {"online.backend": "auto"})
    assert isinstance(make_generator(cfg, "unused", build_tiny_causal_lm(cfg.models.tiny, tok, 0), tok), HFGenerator)
    with pytest.raises(ValueError, match="online.backend: vllm needs"):
        make_generator(load_config("tiny", {"online.backend": "vllm"}), "unused", None, tok)


def test_vllm_token_count():
    fake = [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[1, 2, 3]), SimpleNamespace(token_ids=[4])]),
            SimpleNamespace(outputs=[SimpleNamespace(token_ids=[])])]
    assert count_vllm_tokens(fake) == 4


@pytest.mark.parametrize("n_items,n_shards", [(10, 3), (9, 3), (2, 4), (0, 2), (20_000, 8), (20_001, 8)])
def test_shards_cover_every_prompt(n_items, n_shards):
    bounds = shard_bounds(n_items, n_shards)
    assert len(bounds) == n_shards
    assert bounds[0][0] == 0 and bounds[-1][1] == n_items
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])), "contiguous, in order"
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1, "no shard takes more than one extra prompt"
    # The reference code's `len // world_size` per GPU would lose n_items % n_shards prompts.
    assert sum(sizes) == n_items


def test_shard_gpus_and_their_check():
    assert shard_gpus(1, 2, "4,5,6,7") == "6,7"
    assert shard_gpus(0, 1, "3") == "3"
    with pytest.raises(ValueError, match="online.data_parallel_size: shard 2 needs GPUs 4..5 but only 4 are visible"):
        shard_gpus(2, 2, "0,1,2,3")
    with pytest.raises(ValueError, match="online.data_parallel_size: must be >= 1"):
        shard_bounds(5, 0)


def test_generation_backs_off_when_gpu_memory_runs_out(tok, tiny_cfg, capsys):
    import torch

    model = build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0)
    real_generate, rows_seen = model.generate, []

    def generate_with_small_memory(**kwargs):
        rows = kwargs["input_ids"].shape[0] * kwargs["num_return_sequences"]
        rows_seen.append(rows)
        if rows > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_generate(**kwargs)

    model.generate = generate_with_small_memory
    gen = HFGenerator(model, tok, "cpu", batch_size=32)  # asks for 8 prompts x 4 samples per call
    out = gen.generate([P] * 7, n=4, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0, progress=False)
    assert [len(x) for x in out] == [4] * 7, "every prompt still gets its samples"
    assert rows_seen[:3] == [28, 16, 8], "halved until the call fits"
    assert gen.new_tokens > 0
    assert "out of GPU memory; retrying with 2 prompts x 4 samples per call" in capsys.readouterr().out


def test_static_cache_samples_the_same_schema(tok, tiny_cfg):
    model = build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0)
    gen = HFGenerator(model, tok, "cpu", batch_size=8, cache_implementation="static")
    out = gen.generate([P, P], n=2, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0, progress=False)
    assert [len(x) for x in out] == [2, 2] and all(isinstance(s, str) for x in out for s in x)


def test_data_parallel_shards_join_in_prompt_order(tok, tmp_path, capsys):
    """Two CPU worker processes over 5 prompts give exactly what one process gives on each shard."""
    import torch

    from rlhf_utils.artifacts import RunDir
    from rlhf_utils.config import load_config
    from rlhf_utils.models import load_causal_lm

    cfg = load_config("tiny", {"online.data_parallel_size": 2, "runtime.num_threads": 1})
    run = RunDir.open(tmp_path / "run", cfg)
    model_dir = tmp_path / "policy"
    build_tiny_causal_lm(cfg.models.tiny, tok, seed=0).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    tasks = ToyWorld.from_recipe().all_instructions()[:5]
    prompts = [[{"role": "user", "content": ins.text}] for ins in tasks]
    gen = make_generator(cfg, str(model_dir), None, tok, work_dir=tmp_path / "shards", config_path=run / "config.yaml")
    assert isinstance(gen, ShardedGenerator)
    gen.poll = 0.5
    joined = gen.generate(prompts, n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=10, tag="gen")
    assert not (tmp_path / "shards").exists(), "scratch files are removed once joined"
    printed = capsys.readouterr().out
    assert "gen: shard 0: " in printed, "running shards report their progress"
    assert "gen: shard 1/2 done (3 prompts)" in printed and "gen: shard 2/2 done (2 prompts)" in printed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = HFGenerator.from_config(load_causal_lm(model_dir, cfg), tok, cfg)
        expected = one.generate(prompts[:3], 3, 1.0, 1.0, 6, seed=10, progress=False)
        expected += one.generate(prompts[3:], 3, 1.0, 1.0, 6, seed=11, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert joined == expected
    assert gen.new_tokens > 0


def test_a_failed_shard_names_itself_with_its_log(tok, tmp_path):
    from rlhf_utils.artifacts import RunDir
    from rlhf_utils.config import load_config

    cfg = load_config("tiny", {"online.data_parallel_size": 2, "runtime.num_threads": 1})
    run = RunDir.open(tmp_path / "run", cfg)
    gen = ShardedGenerator(run / "config.yaml", str(tmp_path / "no_model"), 2, tmp_path / "shards")
    with pytest.raises(RuntimeError, match=r"(?s)generation shard\(s\) \[0, 1\] failed.*holds no saved model"):
        gen.generate([P, P, P], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0, progress=False)


def test_bench_generation_measures_each_batch_and_cache(tok, tiny_cfg, tmp_path, capsys):
    import json

    from rlhf_utils.cli import main

    model_dir = tmp_path / "policy"
    build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "gen.json"
    args = ["bench-generation", "--model", str(model_dir), "--batch-sizes", "8", "16", "--new-tokens", "4", "--out", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cache"], r["sequences_per_call"]) for r in rows] == [("dynamic", 8), ("dynamic", 16), ("static", 8), ("static", 16)]
    assert all(0 < r["new_tokens"] <= r["prompts"] * r["k"] * 4 and r["tokens_per_second"] > 0 for r in rows)
    assert "sequences per call" in capsys.readouterr().out
    assert main(["bench-generation", "--model", str(model_dir), "--batch-sizes", "0"]) == 2
