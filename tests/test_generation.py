from types import SimpleNamespace

import pytest

from rlhf_utils.generation import (
    HFGenerator,
    LaunchedGenerator,
    convert_vllm_outputs,
    count_vllm_tokens,
    make_generator,
    render_prompts,
    data_parallel_size,
    generation_processes,
    shard_bounds,
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


def test_data_parallel_size_and_its_processes():
    from rlhf_utils.config import load_config
    from rlhf_utils.generation import check_generation_gpus

    assert data_parallel_size(load_config("tiny", {"online.data_parallel_size": 3})) == 3
    auto = load_config("tiny", {"online.data_parallel_size": 0})
    assert data_parallel_size(auto) == 1 and generation_processes(auto) == 1, "0 on the CPU: one shard"
    assert generation_processes(load_config("tiny", {"online.data_parallel_size": 4, "online.tensor_parallel_size": 2})) == 4, \
        "HF has no tensor parallelism: one process per shard"
    with pytest.raises(ValueError, match="online.data_parallel_size: 2 shard\\(s\\) x tensor_parallel_size 1 need 2 GPUs but only 0"):
        check_generation_gpus(load_config("tiny", {"online.data_parallel_size": 2}))
    with pytest.raises(ValueError, match="online.tensor_parallel_size: 2 does not divide 3 processes"):
        LaunchedGenerator("c.yaml", "m", processes=3, work_dir="w", tensor_parallel_size=2)
    with pytest.raises(ValueError, match="online.data_parallel_size: must be >= 0"):
        load_config("tiny", {"online.data_parallel_size": -1})


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


def _two_process_generator(tok, tmp_path, model=True):
    from rlhf_utils.artifacts import RunDir
    from rlhf_utils.config import load_config

    cfg = load_config("tiny", {"online.data_parallel_size": 2, "runtime.num_threads": 1})
    run = RunDir.open(tmp_path / "run", cfg)
    model_dir = tmp_path / "policy"
    if model:
        build_tiny_causal_lm(cfg.models.tiny, tok, seed=0).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    return cfg, model_dir, make_generator(cfg, str(model_dir), None, tok, work_dir=tmp_path / "shards",
                                          config_path=run / "config.yaml")


def test_data_parallel_shards_join_in_prompt_order(tok, tmp_path, capsys):
    """Two CPU processes under accelerate launch over 5 prompts give exactly what one process gives on each shard."""
    import torch

    from rlhf_utils.models import load_causal_lm
    from rlhf_utils.seeds import seed_for

    cfg, model_dir, gen = _two_process_generator(tok, tmp_path)
    cmd = gen.command()
    assert isinstance(gen, LaunchedGenerator) and "accelerate.commands.launch" in cmd
    assert cmd[cmd.index("--main_process_port") + 1] != "29500", "a port of its own, free of any training launch"
    prompts = [[{"role": "user", "content": ins.text}] for ins in ToyWorld.from_recipe().all_instructions()[:5]]
    joined = gen.generate(prompts, n=3, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=10, tag="gen")
    assert not (tmp_path / "shards").exists(), "scratch files are removed once joined"
    printed = capsys.readouterr().out
    assert "gen: 5 prompts in 2 shard(s) on 2 launched process(es)" in printed
    assert "gen:shard0" in printed and "gen:shard1" not in printed, "the first process's progress bar is streamed back"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = HFGenerator.from_config(load_causal_lm(model_dir, cfg), tok, cfg)
        expected = one.generate(prompts[:3], 3, 1.0, 1.0, 6, seed=seed_for(10, "shard", 0), progress=False)
        expected += one.generate(prompts[3:], 3, 1.0, 1.0, 6, seed=seed_for(10, "shard", 1), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert joined == expected
    assert gen.new_tokens > 0


def test_a_failed_shard_names_itself(tok, tmp_path):
    _, _, gen = _two_process_generator(tok, tmp_path)
    with pytest.raises(RuntimeError, match=r"generation shard\(s\) \[1\] failed: shard 1: \w+Error"):
        # the fourth prompt (shard 1 of [0, 2) and [2, 4)) is not a conversation
        gen.generate([P, P, P, None], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0, progress=False)


def test_a_killed_generation_says_so(tok, tmp_path, monkeypatch):
    from rlhf_utils.artifacts import CRASH_ENV

    _, _, gen = _two_process_generator(tok, tmp_path)
    monkeypatch.setenv(CRASH_ENV, "gen:shard1:batch1")  # SIGKILL: no chance to report
    with pytest.raises(RuntimeError, match=r"(?s)gen: generation exited with code \d+ and no shard reported an error.*rank"):
        gen.generate([P, P, P, P], n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0, progress=False, tag="gen")


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
