import json

import pytest
import torch

from rlhf_utils.artifacts import RunDir
from rlhf_utils.models import (
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_tokenizer,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    prepare_initial_policy,
    save_pretrained,
)
from rlhf_utils.world import ToyWorld


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(ToyWorld.from_recipe().vocabulary())


def test_tokenizer_round_trip_and_chat_template(tok):
    text = "write positive about tea in 5 words with sun"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    assert rendered == f"<|user|> {text} <|assistant|> "
    assert tok.pad_token_id != tok.eos_token_id, "pad = eos makes every reward score identical"


def test_save_and_load_by_path(tok, tiny_cfg, tmp_path):
    model = build_tiny_causal_lm(tiny_cfg.models.tiny, tok, seed=0)
    path = save_pretrained(model, tok, tmp_path / "m")
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    loaded = load_causal_lm(path, tiny_cfg)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(model(ids).logits, loaded(ids).logits)
    assert load_tokenizer(path, tiny_cfg).get_vocab() == tok.get_vocab()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary dirs left behind"


def test_initial_policy_is_deterministic(tiny_cfg, tmp_path):
    vocab = ToyWorld.from_recipe().vocabulary()
    a = prepare_initial_policy(tiny_cfg, RunDir(tmp_path / "a", tiny_cfg), vocab)
    b = prepare_initial_policy(tiny_cfg, RunDir(tmp_path / "b", tiny_cfg), vocab)
    sa, sb = load_causal_lm(a, tiny_cfg).state_dict(), load_causal_lm(b, tiny_cfg).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reward_model_has_one_scalar(tok, tiny_cfg, tmp_path):
    rm = build_tiny_reward_model(tiny_cfg.models.tiny, tok, seed=0)
    path = save_pretrained(rm, tok, tmp_path / "rm")
    loaded = load_reward_model(path, tiny_cfg)
    assert loaded.config.pad_token_id == tok.pad_token_id
    assert loaded(torch.tensor([[5, 6, 7]])).logits.shape == (1, 1)


def test_missing_model_path_is_a_clear_error(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no saved model"):
        load_causal_lm(tmp_path / "nothing", tiny_cfg)


def test_tokenizer_without_chat_template_rejected(tok, tiny_cfg, tmp_path):
    tok.save_pretrained(tmp_path / "t")
    (tmp_path / "t" / "config.json").write_text("{}")
    cfg_path = tmp_path / "t" / "tokenizer_config.json"
    data = json.loads(cfg_path.read_text())
    data.pop("chat_template", None)
    cfg_path.write_text(json.dumps(data))
    (tmp_path / "t" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(tmp_path / "t", tiny_cfg)


def test_no_remote_code_and_safetensors_only(monkeypatch, tiny_cfg, tok, tmp_path):
    """Every from_pretrained call gets use_safetensors=True and trust_remote_code=False by default."""
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    path = save_pretrained(build_tiny_causal_lm(tiny_cfg.models.tiny, tok, 0), tok, tmp_path / "m")
    load_causal_lm(path, tiny_cfg)
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False


def test_reward_model_with_two_outputs_rejected(tok, tiny_cfg, tmp_path):
    from transformers import LlamaForSequenceClassification

    from rlhf_utils.models import _llama_config

    two = LlamaForSequenceClassification(_llama_config(tiny_cfg.models.tiny, tok, num_labels=2))
    path = save_pretrained(two, tok, tmp_path / "rm2")
    with pytest.raises(ValueError, match="outputs 2 values, expected one scalar"):
        load_reward_model(path, tiny_cfg)


def test_qlora_without_bitsandbytes_is_a_clear_error(monkeypatch):
    import importlib.util

    from rlhf_utils.config import load_config
    from rlhf_utils.models import quantization

    cfg = load_config("colab_t4", {"models.lora.load_in_4bit": True})
    assert quantization(cfg).load_in_4bit and quantization(load_config("colab_t4")) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ValueError, match=r"models.lora.load_in_4bit: 4-bit QLoRA needs bitsandbytes"):
        quantization(cfg)
