"""Sampling responses from a policy: one interface, Hugging Face ``generate`` or vLLM behind it.

Both backends take conversational prompts and return, for each prompt, a list of ``n``
response strings (the same schema), so the online loop does not care which one ran.

Usage::

    gen = HFGenerator(model, tokenizer, device="cpu", batch_size=256)
    responses = gen.generate(prompts, n=8, temperature=1.0, top_p=1.0, max_new_tokens=16, seed=0)
    responses[0]      # 8 strings for the first prompt
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Messages = list[dict[str, str]]


@dataclass
class SamplingSettings:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


class HFGenerator:
    """Batched sampling with ``model.generate`` (KV cache on), on the CPU or a GPU.

    Each batch reseeds torch from ``seed`` and the batch index, so results do not depend on
    how many batches ran before (a resumed run samples the same responses).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str, batch_size: int):
        self.model, self.tok, self.device, self.batch_size = model, tokenizer, device, batch_size

    @torch.no_grad()
    def generate(
        self, prompts: list[Messages], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
        progress: bool = True,
    ) -> list[list[str]]:
        self.model.to(self.device).eval()
        old_side = self.tok.padding_side
        self.tok.padding_side = "left"  # decoder-only models continue from the right edge
        texts = [self.tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        per_batch = max(1, self.batch_size // n)
        out: list[list[str]] = []
        starts = range(0, len(texts), per_batch)
        try:
            for b, start in enumerate(tqdm(starts, desc="generate", disable=not progress, mininterval=5)):
                batch = self.tok(texts[start : start + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
                batch = batch.to(self.device)
                torch.manual_seed(seed * 100_003 + b)
                seqs = self.model.generate(
                    **batch,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=0,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=n,
                    pad_token_id=self.tok.pad_token_id,
                    eos_token_id=self.tok.eos_token_id,
                )
                new = seqs[:, batch["input_ids"].shape[1] :]
                decoded = [s.strip() for s in self.tok.batch_decode(new, skip_special_tokens=True)]
                out += [decoded[i : i + n] for i in range(0, len(decoded), n)]
        finally:
            self.tok.padding_side = old_side
        return out


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
