"""The online-DPO peer's reward function: shapes, the RM's own tokenizer, and TRL's real call path.

No training runs here: the trainer is only constructed, and its reward computation called once.
"""

import numpy as np
import pytest
import torch
from datasets import Dataset

from rlhf_utils.models import build_tiny_causal_lm, build_tiny_reward_model, build_tokenizer
from rlhf_utils.peer import RewardModelReward, online_dpo_steps
from rlhf_utils.scoring import RewardScorer
from rlhf_utils.world import ToyWorld

PROMPTS = [
    [{"role": "user", "content": "write positive about tea in 5 words with sun"}],
    [{"role": "user", "content": "write negative about sea in 4 words with moon"}],
]
TEXTS = ["tea good sun nice great", "sea bad moon", "happy", "sea sea"]


@pytest.fixture(scope="module")
def toks():
    """The policy's tokenizer and a reward-model tokenizer over the same words with other ids."""
    words = ToyWorld.from_recipe().vocabulary()
    return build_tokenizer(words), build_tokenizer(list(reversed(words)))


@pytest.fixture(scope="module")
def reward(toks, tiny_cfg):
    _, rm_tok = toks
    rm = build_tiny_reward_model(tiny_cfg.models.tiny, rm_tok, seed=0)
    return RewardModelReward(RewardScorer(rm, rm_tok, "cpu", batch_size=3))  # small batches: padding exercised


def test_reward_shapes_formats_and_count(reward):
    prompts, before = [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]], reward.scored
    conversational = reward(prompts, [[{"role": "assistant", "content": t}] for t in TEXTS], completion_ids=[[1]] * 4)
    plain = reward(prompts, [f" {t} " for t in TEXTS])  # TRL passes strings for standard (non-chat) data
    assert len(conversational) == len(TEXTS) and all(isinstance(r, float) for r in conversational)
    assert np.allclose(conversational, plain, atol=1e-6), "edge spaces of decoded text must not change a score"
    assert reward.scored - before == 8, "the wrapper counts every completion it scores (the peer's samples_generated)"


def test_scores_with_the_reward_models_own_tokenizer(reward, toks):
    policy_tok, rm_tok = toks
    prompts = [PROMPTS[0], PROMPTS[1]]
    got = reward(prompts, [TEXTS[0], TEXTS[1]])
    rm = reward.scorer.model
    rendered = [reward.scorer.render(p, t) for p, t in zip(prompts, TEXTS[:2])]

    def direct(tok):
        with torch.no_grad():
            return [float(rm(**tok(r, return_tensors="pt", add_special_tokens=False)).logits[0, 0]) for r in rendered]

    assert np.allclose(got, direct(rm_tok), atol=1e-5)
    # The policy's ids mean other words to this RM: scoring through them would give other numbers.
    assert not np.allclose(got, direct(policy_tok), atol=1e-3)


def test_trl_online_dpo_calls_the_wrapper_with_its_signature(reward, toks, tiny_cfg, tmp_path):
    """Through OnlineDPOTrainer's own reward computation (TRL 1.16): (2B,) rewards equal to the wrapper's."""
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    policy_tok, _ = toks
    args = OnlineDPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, activation_checkpointing=False,
        report_to="none", save_strategy="no", per_device_train_batch_size=2, max_steps=1, max_new_tokens=4,
    )
    trainer = OnlineDPOTrainer(
        model=build_tiny_causal_lm(tiny_cfg.models.tiny, policy_tok, seed=0), reward_funcs=reward, args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=policy_tok,
    )
    assert trainer.num_generations == 2  # the peer's sample budget assumes two samples per prompt
    completions = [[{"role": "assistant", "content": t}] for t in TEXTS]
    rewards = trainer._calculate_rewards_from_functions(
        prompts=2 * PROMPTS, completions=completions, completion_ids_list=[[1]] * 4
    )
    assert rewards.shape == (4,)
    assert np.allclose(rewards.numpy(), reward(2 * PROMPTS, TEXTS), atol=1e-5)


def test_steps_spend_the_sample_budget():
    assert online_dpo_steps(3 * 512 * 8, 32) == 192  # the tiny preset's loop budget
    assert online_dpo_steps(256, 32) == 4
    assert online_dpo_steps(100, 32) == 2  # rounded up: never under budget
    with pytest.raises(ValueError, match="total_samples"):
        online_dpo_steps(0, 32)
