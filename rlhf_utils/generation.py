"""Sampling responses from a policy: one interface, Hugging Face ``generate`` or vLLM behind it.

Both backends take conversational prompts and return, for each prompt, a list of ``n``
response strings (the same schema), so the online loop does not care which one ran.

Usage::

    gen = HFGenerator(model, tokenizer, device="cpu", batch_size=256)
    responses = gen.generate(prompts, n=8, temperature=1.0, top_p=1.0, max_new_tokens=16, seed=0)
    responses[0]      # 8 strings for the first prompt
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .artifacts import atomic_write_json, crash_point, read_json

Messages = list[dict[str, str]]


class HFGenerator:
    """Batched sampling with ``model.generate`` (KV cache on), on the CPU or a GPU.

    On a GPU the batch is the first lever of throughput: ``batch_size`` sequences (prompts x n)
    go into each ``generate`` call, and when that runs out of GPU memory the call is retried
    with half as many prompts, so a preset can ask for more than fits. ``cache_implementation``
    is ``dynamic`` (transformers' default) or ``static``; which is faster depends on the batch
    (``rlhf-workflow bench-generation`` measures both on the machine at hand).

    Each batch reseeds torch from ``seed`` and the batch index, so results do not depend on
    how many batches ran before (a resumed run samples the same responses). ``new_tokens``
    holds the number of tokens the last call generated (padding excluded).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: str, batch_size: int,
        cache_implementation: str = "dynamic",
    ):
        self.model, self.tok, self.device, self.batch_size = model, tokenizer, device, batch_size
        self.cache_implementation = cache_implementation
        self.new_tokens = 0

    @classmethod
    def from_config(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg) -> "HFGenerator":
        from .models import resolve_device

        o = cfg.online
        return cls(model, tokenizer, resolve_device(cfg), o.generation_batch_size, o.cache_implementation)

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
        start = b = self.new_tokens = 0
        bar = tqdm(total=len(texts), desc="generate", unit="prompt", disable=not progress, mininterval=5)
        try:
            while start < len(texts):
                chunk = texts[start : start + per_batch]
                try:
                    decoded = self._sample(chunk, n, temperature, top_p, max_new_tokens, seed * 100_003 + b)
                except torch.cuda.OutOfMemoryError:
                    if per_batch == 1:
                        raise
                    per_batch //= 2
                    self.batch_size = per_batch * n  # later calls start from the size that fitted
                    torch.cuda.empty_cache()
                    print(f"{tag}: out of GPU memory; retrying with {per_batch} prompts x {n} samples per call", flush=True)
                    continue
                out += [decoded[i : i + n] for i in range(0, len(decoded), n)]
                start, b = start + len(chunk), b + 1
                bar.update(len(chunk))
                crash_point(f"{tag}:batch{b}")
        finally:
            bar.close()
            self.tok.padding_side = old_side
        return out

    def _sample(self, texts: list[str], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> list[str]:
        batch = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(seed)
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
            cache_implementation=None if self.cache_implementation == "dynamic" else self.cache_implementation,
        )
        new = seqs[:, batch["input_ids"].shape[1] :]
        self.new_tokens += int((new != self.tok.pad_token_id).sum())
        return [s.strip() for s in self.tok.batch_decode(new, skip_special_tokens=True)]


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def uses_vllm(cfg) -> bool:
    """Whether ``online.backend`` resolves to vLLM (``auto``: when installed and a GPU is present);
    asking for ``vllm`` where it cannot run is an error naming the key."""
    backend = cfg.online.backend
    if backend == "vllm" and not vllm_available():
        raise ValueError("online.backend: vllm needs the vllm package and a CUDA GPU (use hf or auto)")
    return backend == "vllm" or (backend == "auto" and vllm_available())


def render_prompts(tok: PreTrainedTokenizerBase, prompts: list[Messages]) -> list[str]:
    """Chat-templated prompt strings, ending where the assistant's answer begins."""
    return [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]


def vllm_requests(tok: PreTrainedTokenizerBase, prompts: list[Messages]) -> list[dict[str, list[int]]]:
    """vLLM prompts as token ids (``TokensPrompt`` dicts): the chat template already holds any BOS,
    so text prompts would get a second one from vLLM's tokenizer. These are exactly the ids the
    HF backend feeds ``generate``."""
    return [{"prompt_token_ids": tok(text, add_special_tokens=False)["input_ids"]} for text in render_prompts(tok, prompts)]


def vllm_sampling_kwargs(n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> dict:
    """Arguments of ``vllm.SamplingParams`` for K samples per prompt (the paper: n=8, T=1.0, top_p=1.0)."""
    return {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens, "seed": seed}


def convert_vllm_outputs(outputs: list) -> list[list[str]]:
    """``LLM.generate`` results to the shared schema: one list of n response strings per prompt, in order."""
    return [[c.text.strip() for c in out.outputs] for out in outputs]


def count_vllm_tokens(outputs: list) -> int:
    """Tokens generated over all prompts and samples of an ``LLM.generate`` result."""
    return sum(len(c.token_ids) for out in outputs for c in out.outputs)


class VLLMGenerator:
    """Sampling with vLLM (GPU only; imported lazily, so the CPU install never needs it).

    Every prompt of a shard is sent in one ``generate`` call: vLLM schedules and batches them
    itself. Several GPUs: ``online.tensor_parallel_size`` splits one engine across GPUs,
    ``online.data_parallel_size`` runs several engines on disjoint prompt shards. The online
    loop always runs vLLM in worker processes (:class:`ShardedGenerator`), so the engine's GPU
    memory is returned when they exit, before DPO trains on the same GPUs.
    """

    def __init__(self, model_path: str, tokenizer: PreTrainedTokenizerBase, tensor_parallel_size: int, dtype: str,
                 gpu_memory_utilization: float, trust_remote_code: bool):
        from vllm import LLM

        self.tok = tokenizer
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code)
        self.new_tokens = 0

    def generate(
        self, prompts: list[Messages], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
        progress: bool = True, tag: str = "generate",
    ) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(n, temperature, top_p, max_new_tokens, seed))
        outputs = self.llm.generate(vllm_requests(self.tok, prompts), params, use_tqdm=progress)
        self.new_tokens = count_vllm_tokens(outputs)
        return convert_vllm_outputs(outputs)


# ------------------------------------------------------------------ data parallel shards


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges covering all ``n_items``, sizes differing by at most one.

    The reference code gives each of its W GPUs ``len(prompts) // W`` prompts and loses the
    remainder; here the first ``n_items % n_shards`` shards take one prompt more instead.
    """
    if n_shards < 1:
        raise ValueError(f"online.data_parallel_size: must be >= 1 (got {n_shards})")
    base, extra = divmod(n_items, n_shards)
    bounds, start = [], 0
    for i in range(n_shards):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def shard_gpus(shard: int, tensor_parallel_size: int, visible: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` of one shard: its own ``tensor_parallel_size`` GPUs out of the visible ones."""
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    mine = ids[shard * tensor_parallel_size : (shard + 1) * tensor_parallel_size]
    if len(mine) < tensor_parallel_size:
        raise ValueError(
            f"online.data_parallel_size: shard {shard} needs GPUs {shard * tensor_parallel_size}.."
            f"{(shard + 1) * tensor_parallel_size - 1} but only {len(ids)} are visible"
        )
    return ",".join(mine)


def check_shard_gpus(shards: int, tensor_parallel_size: int) -> None:
    """Fail before any process starts unless ``shards`` x ``tensor_parallel_size`` GPUs are visible."""
    shard_gpus(shards - 1, tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _last_line(path: str | Path) -> str:
    """The last non-empty line of a log (progress bars redraw with carriage returns)."""
    with open(path, "rb") as fh:
        fh.seek(max(0, fh.seek(0, 2) - 1000))
        lines = [x.strip() for x in fh.read().decode(errors="replace").replace("\r", "\n").split("\n")]
    return next((x for x in reversed(lines) if x), "starting")


class ShardedGenerator:
    """Data-parallel generation: one worker process per shard of the prompts, run concurrently.

    Each worker (``python -m rlhf_utils.generation``) loads the policy into its own backend
    (vLLM or HF) on its own ``tensor_parallel_size`` GPUs (CPU processes when the run is on the
    CPU), samples its shard with seed ``seed + shard``, and writes its responses atomically; the
    parent joins them in prompt order and checks that every prompt came back.

    Usage::

        gen = ShardedGenerator(run / "config.yaml", policy_dir, shards=8, work_dir=run / "online/iter_1/shards")
        responses = gen.generate(prompts, n=8, temperature=1.0, top_p=1.0, max_new_tokens=2048, seed=42)
    """

    def __init__(self, config_path: str | Path, model_path: str, shards: int, work_dir: str | Path,
                 tensor_parallel_size: int = 1, cuda: bool = False, poll: float = 30.0):
        self.config_path, self.model_path, self.shards = str(config_path), str(model_path), shards
        self.work_dir, self.tp, self.cuda, self.poll = Path(work_dir), tensor_parallel_size, cuda, poll
        self.new_tokens = 0
        if cuda:
            check_shard_gpus(shards, tensor_parallel_size)

    def generate(
        self, prompts: list[Messages], n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
        progress: bool = True, tag: str = "generate",
    ) -> list[list[str]]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        for i, (lo, hi) in enumerate(shard_bounds(len(prompts), self.shards)):
            if lo == hi:  # fewer prompts than shards: nothing to start
                continue
            request = {"prompts": prompts[lo:hi], "n": n, "temperature": temperature, "top_p": top_p,
                       "max_new_tokens": max_new_tokens, "seed": seed + i, "tag": f"{tag}:shard{i}"}
            request_path, out_path = self.work_dir / f"shard_{i}.request.json", self.work_dir / f"shard_{i}.json"
            atomic_write_json(request_path, request)
            out_path.unlink(missing_ok=True)
            env = dict(os.environ)
            if self.cuda:
                env["CUDA_VISIBLE_DEVICES"] = shard_gpus(i, self.tp, os.environ.get("CUDA_VISIBLE_DEVICES"))
            cmd = [sys.executable, "-m", "rlhf_utils.generation", "--config", self.config_path,
                   "--model", self.model_path, "--request", str(request_path), "--out", str(out_path)]
            log = open(self.work_dir / f"shard_{i}.log", "w")
            procs.append((i, hi - lo, out_path, log, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        # Every `poll` seconds, each running shard's latest progress-bar line (a long GPU rollout
        # would otherwise print nothing until the end).
        last = time.time()
        while any(proc.poll() is None for *_, proc in procs):
            time.sleep(0.2)
            if progress and time.time() - last >= self.poll:
                last = time.time()
                print(f"{tag}: " + "; ".join(f"shard {i}: {_last_line(log.name)}" for i, _, _, log, proc in procs
                                             if proc.poll() is None), flush=True)
        out: list[list[str]] = []
        failed = []
        self.new_tokens = 0
        for i, size, out_path, log, proc in procs:
            code = proc.wait()
            log.close()
            result = read_json(out_path) if code == 0 else None
            if result is None or len(result["responses"]) != size:
                failed.append(i)
                continue
            out += result["responses"]
            self.new_tokens += result["new_tokens"]
            if progress:
                print(f"{tag}: shard {i + 1}/{self.shards} done ({size} prompts)", flush=True)
        if failed:
            tails = "\n".join(f"--- shard {i}: {(self.work_dir / f'shard_{i}.log').read_text()[-1500:]}" for i in failed)
            raise RuntimeError(f"{tag}: generation shard(s) {failed} failed; their logs end with:\n{tails}")
        assert len(out) == len(prompts)
        shutil.rmtree(self.work_dir)  # the joined responses are the artifact; the shard files were scratch
        return out


def make_generator(cfg, model_path: str, model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase,
                   work_dir: str | Path | None = None, config_path: str | Path | None = None):
    """The backend ``online.backend`` asks for; ``auto`` takes vLLM when it is installed and a GPU is present.

    Given the run's ``config_path`` and a scratch ``work_dir``, vLLM (always) and any backend
    with ``online.data_parallel_size`` > 1 run in ``data_parallel_size`` worker processes.
    """
    from .models import load_causal_lm, resolve_device, resolve_precision

    o = cfg.online
    use_vllm = uses_vllm(cfg)
    if work_dir is not None and (use_vllm or o.data_parallel_size > 1):
        return ShardedGenerator(config_path, model_path, o.data_parallel_size, work_dir, o.tensor_parallel_size,
                                cuda=resolve_device(cfg) == "cuda")
    if use_vllm:
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[resolve_precision(cfg)]
        return VLLMGenerator(model_path, tokenizer, o.tensor_parallel_size, dtype, o.vllm_gpu_memory_utilization,
                             cfg.models.trust_remote_code)
    return HFGenerator.from_config(model if model is not None else load_causal_lm(model_path, cfg), tokenizer, cfg)


def main(argv: list[str] | None = None) -> int:
    """One data-parallel shard: ``python -m rlhf_utils.generation --config C --model M --request R --out O``."""
    import argparse

    from .config import load_config
    from .models import apply_runtime, load_tokenizer

    p = argparse.ArgumentParser(prog="python -m rlhf_utils.generation")
    for flag in ("--config", "--model", "--request", "--out"):
        p.add_argument(flag, required=True)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    apply_runtime(cfg)
    request = json.loads(Path(args.request).read_text())
    gen = make_generator(cfg, args.model, None, load_tokenizer(args.model, cfg))
    responses = gen.generate(
        request["prompts"], request["n"], request["temperature"], request["top_p"], request["max_new_tokens"],
        request["seed"], progress=True, tag=request["tag"],  # the bar goes to the shard's log
    )
    atomic_write_json(args.out, {"responses": responses, "new_tokens": gen.new_tokens})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
