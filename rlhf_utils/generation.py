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

from .artifacts import crash_point

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
        progress: bool = True, tag: str = "generate",
    ) -> list[list[str]]:
        self.model.to(self.device).eval()
        old_side = self.tok.padding_side
        self.tok.padding_side = "left"  # decoder-only models continue from the right edge
        texts = render_prompts(self.tok, prompts)
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
                crash_point(f"{tag}:batch{b + 1}")
        finally:
            self.tok.padding_side = old_side
        return out


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def render_prompts(tok: PreTrainedTokenizerBase, prompts: list[Messages]) -> list[str]:
    """Chat-templated prompt strings, ending where the assistant's answer begins."""
    return [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]


def vllm_sampling_kwargs(n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> dict:
    """Arguments of ``vllm.SamplingParams`` for K samples per prompt (the paper: n=8, T=1.0, top_p=1.0)."""
    return {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens, "seed": seed}


def convert_vllm_outputs(outputs: list) -> list[list[str]]:
    """``LLM.generate`` results to the shared schema: one list of n response strings per prompt, in order."""
    return [[c.text.strip() for c in out.outputs] for out in outputs]


class VLLMGenerator:
    """Sampling with vLLM (GPU only; imported lazily, so the CPU install never needs it).

    Every prompt is sent in one ``generate`` call: vLLM schedules them itself, so no prompt
    is left over the way fixed-size shards can drop a remainder.
    """

    def __init__(self, model_path: str, tokenizer: PreTrainedTokenizerBase, tensor_parallel_size: int, dtype: str):
        from vllm import LLM

        self.tok = tokenizer
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype, trust_remote_code=False)

    def generate(
        self, prompts: list[Messages], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
        progress: bool = True, tag: str = "generate",
    ) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(n, temperature, top_p, max_new_tokens, seed))
        outputs = self.llm.generate(render_prompts(self.tok, prompts), params, use_tqdm=progress)
        return convert_vllm_outputs(outputs)


def make_generator(cfg, model_path: str, model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase):
    """The backend ``online.backend`` asks for; ``auto`` takes vLLM when it is installed and a GPU is present."""
    from .models import resolve_device, resolve_precision

    backend = cfg.online.backend
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        if not vllm_available():
            raise ValueError("online.backend: vllm needs the vllm package and a CUDA GPU (use hf or auto)")
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[resolve_precision(cfg)]
        return VLLMGenerator(model_path, tokenizer, cfg.online.tensor_parallel_size, dtype)
    if model is None:
        from .models import load_causal_lm

        model = load_causal_lm(model_path, cfg)
    return HFGenerator(model, tokenizer, resolve_device(cfg), cfg.online.generation_batch_size)
