"""The mini hub's data: the real datasets' schemas, read by the real adapters, in rlhflow_small's structure."""

from __future__ import annotations

import random

import yaml

from rlhf_utils import mini_hub
from rlhf_utils.recipes import ADAPTERS, RECIPE_DIR


def test_generated_rows_pass_the_real_adapters():
    rng = random.Random(0)
    for rows, adapter in ((mini_hub.sft_rows(rng, 50), "rlhflow_sft"), (mini_hub.preference_rows(rng, 50), "preference_700k"),
                          (mini_hub.prompt_rows(rng, 50), "context_messages")):
        for row in rows:
            ADAPTERS[adapter].fn(row)  # raises on a malformed row
    pref = mini_hub.preference_rows(random.Random(1), 20)
    assert all(r["chosen_score"] > r["rejected_score"] and r["chosen"][:-1] == r["rejected"][:-1] for r in pref)
    sft = mini_hub.sft_rows(random.Random(2), 200)
    assert len({r["conversations"][-1]["content"] for r in sft}) > 150, "varied text"
    assert any(r["conversations"][0]["role"] == "system" for r in sft) and any(len(r["conversations"]) > 3 for r in sft)


def test_the_recipe_is_rlhflow_small_pointed_at_the_mini_hub():
    small = yaml.safe_load((RECIPE_DIR / "rlhflow_small.yaml").read_text())
    hub = mini_hub.hub_recipe("datasets")
    for part in ("sft", "preference", "iteration_prompts", "eval_prompts"):
        assert [(s["adapter"], s["split"], s["invalid_rows"]) for s in hub[part]] == \
               [(s["adapter"], s["split"], s["invalid_rows"]) for s in small[part]]
        assert [s["dataset"] for s in hub[part]] == [f"datasets/{s['dataset']}" for s in small[part]]
        assert all(s["num_samples"] == mini_hub.SAMPLES[part] for s in hub[part])


def test_the_tokenizer_speaks_chatml_with_qwens_default_system_turn():
    tok = mini_hub.build_tokenizer(["Hello there, how are you?", "A starter is flour and water."] * 20, vocab_size=300)
    text = tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    assert text == f"<|im_start|>system\n{mini_hub.QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(text), "byte-level BPE round trip, merges learned"
