from types import SimpleNamespace

import pytest

from rlhf_utils.generation import (
    HFGenerator,
    convert_vllm_outputs,
    make_generator,
    render_prompts,
    vllm_available,
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
