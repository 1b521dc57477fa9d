"""The GPU presets' structure on the CPU: their model ids mapped to local tiny models.

colab_t4 trains with LoRA (PEFT) and a global batch made of small per-device batches and
gradient accumulation; here one SFT step runs with exactly that structure, on a tiny Llama
saved locally, and the merged result loads back as a plain model. The GPU preset files list
only their changes from the paper defaults: no toy-world or tiny-model blocks.
"""

import pytest
import yaml

from rlhf_utils.artifacts import RunDir
from rlhf_utils.config import Config, load_config, preset_path
from rlhf_utils.data import build_toy_world_splits
from rlhf_utils.models import load_causal_lm, prepare_initial_policy
from rlhf_utils.trainers import common_args, train_sft
from rlhf_utils.world import ToyWorld


@pytest.mark.parametrize("preset", ["colab_t4", "single_gpu", "paper"])
def test_gpu_preset_files_have_no_toy_world_or_tiny_model_blocks(preset):
    tree = yaml.safe_load(preset_path(preset).read_text())
    assert "world" not in tree and "tiny" not in tree.get("models", {})
    cfg = load_config(preset)
    assert cfg.world == Config().world and cfg.models.tiny == Config().models.tiny, "they take the defaults"


@pytest.mark.parametrize("preset", ["colab_t4", "single_gpu", "paper"])
def test_gpu_preset_structure_trains_on_local_tiny_model(preset, tmp_path):
    real = load_config(preset)
    world = ToyWorld.from_recipe()
    tiny = load_config("tiny")
    start = prepare_initial_policy(tiny, RunDir.open(tmp_path / "run", tiny), world.vocabulary())
    # The preset's training structure (LoRA, batch arithmetic, schedule), with the hub model and data
    # replaced by local tiny ones and lengths/epochs cut to CPU size.
    cfg = load_config(preset, {
        "models.policy": start, "data.recipe": "toy_world", "runtime.device": "cpu", "runtime.precision": "fp32",
        "runtime.gradient_checkpointing": False, "sft.max_length": 48, "sft.epochs": 1.0, "sft.packing": False,
        "sft.global_batch_size": real.sft.global_batch_size, "world.n_sft_prompts": 4 * real.sft.global_batch_size,
        "models.lora.target_modules": ["q_proj", "v_proj"],
    })
    args = common_args(cfg, cfg.sft, cfg.world.n_sft_prompts, tmp_path / "t")
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == real.sft.global_batch_size
    splits = build_toy_world_splits(cfg, world)
    log = train_sft(cfg, start, splits["sft"].select(range(cfg.world.n_sft_prompts)), tmp_path / "sft")
    assert [h for h in log.history if "loss" in h], "at least one optimizer step was logged"
    model = load_causal_lm(tmp_path / "sft", cfg)
    assert not any("lora" in name for name, _ in model.named_parameters()), "LoRA is merged into the saved model"


def test_qlora_merges_into_a_full_precision_checkpoint(tmp_path):
    """colab_t4 with 4-bit QLoRA (bitsandbytes' CPU kernels here): the saved SFT model is a plain
    fp32 checkpoint that carries the LoRA update, not a 4-bit one with the update rounded away."""
    import torch
    from safetensors.torch import load_file

    world, tiny = ToyWorld.from_recipe(), load_config("tiny")
    start = prepare_initial_policy(tiny, RunDir.open(tmp_path / "run", tiny), world.vocabulary())
    cfg = load_config("colab_t4", {
        "models.policy": start, "data.recipe": "toy_world", "runtime.device": "cpu", "runtime.precision": "fp32",
        "runtime.gradient_checkpointing": False, "models.lora.load_in_4bit": True, "sft.max_length": 48,
        "sft.epochs": 1.0, "sft.packing": False, "sft.global_batch_size": 8, "sft.per_device_batch_size": 8,
        "sft.learning_rate": 1e-2, "world.n_sft_prompts": 32, "models.lora.target_modules": ["q_proj", "v_proj"],
    })
    splits = build_toy_world_splits(cfg, world)
    train_sft(cfg, start, splits["sft"].select(range(32)), tmp_path / "sft")
    assert "quantization_config" not in (tmp_path / "sft/config.json").read_text()
    model = load_causal_lm(tmp_path / "sft", cfg)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    before, after = load_file(f"{start}/model.safetensors"), load_file(tmp_path / "sft/model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert after[key].dtype == torch.float32 and not torch.equal(before[key], after[key]), "the update was merged"
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]), \
        "layers without LoRA come back exactly (not through a 4-bit round trip)"
