"""The benchmark: the whole pipeline over several seeds, scaling of one online iteration, and
the fully online peer (TRL's OnlineDPOTrainer) at the same generation budget.

Usage::

    rlhf-workflow bench --preset tiny --seeds 3            # writes bench/report.json and bench/report.md
    report = run_bench("tiny", seeds=3, out_dir="bench")

Numbers are measured, never asserted: the report states the goals beside what was reached.
"""

from __future__ import annotations

import json
import platform
import resource
import shutil
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

from datasets import concatenate_datasets, load_from_disk

from .artifacts import RunDir, atomic_dir, atomic_write_json, atomic_write_text
from .config import load_config
from .pipeline import NOTEBOOKS, run_pipeline

# The five stages; notebook 06's ablations are a sweep over seeds of their own (`make sweep`), and
# nothing in this report reads them.
BENCH_NOTEBOOKS = NOTEBOOKS[:5]


def _seed_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The per-seed numbers the report aggregates."""
    out = {
        "sft_gold_reward": results["sft"].get("gold_reward"),
        "rm_accuracy": results["reward_model"]["accuracy"],
        "rm_accuracy_vs_gold_order": results["reward_model"].get("accuracy_vs_gold_order"),
        "rm_length_correlation": results["reward_model"]["length_correlation"],
        "annotator_self_agreement": results["reward_model"].get("annotator_self_agreement"),
        "pm_accuracy": results["preference_model"]["accuracy"],
        "pm_accuracy_vs_gold_order": results["preference_model"].get("accuracy_vs_gold_order"),
        "pm_position_consistency": results["preference_model"]["position_consistency"],
        "offline_win_rate": results["offline_dpo"].get("win_rate_vs_sft"),
        "offline_offpolicy_distance": results["offline_dpo"]["offpolicy_distance"],
    }
    for s in results["online_dpo"]["iterations"]:
        out[f"online_iter{s['iteration']}_win_rate"] = s.get("win_rate_vs_sft")
    evaluation = results.get("evaluation", {})
    last = f"iter_{len(results['online_dpo']['iterations'])}"
    if last in evaluation:
        out["online_lc_win_rate"] = evaluation[last].get("lc_win_rate_vs_sft")
        out["offline_lc_win_rate"] = evaluation["offline_dpo"].get("lc_win_rate_vs_sft")
    for stage, secs in results["timings"].items():
        out[f"seconds_{stage}"] = secs
    for phase, share in results["online_dpo"].get("time_share", {}).items():
        out[f"online_share_{phase}"] = share
    return {k: v for k, v in out.items() if v is not None}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _time_iteration(base: Path, dest: Path, preset: str, overrides: dict[str, Any], double_prompts: bool) -> float:
    """Seconds of one online iteration (generate, score, pair, train) on a copy of a finished run."""
    from .data import gold_reward_of
    from .online import iteration, prepare_loop

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for part in ("data", "models/sft", "models/reward_model", "models/preference_model", "eval/sft.json"):
        src, target = base / part, dest / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        elif src.exists():
            shutil.copy(src, target)
    cfg = load_config(preset, overrides)
    run = RunDir(dest, cfg)
    if double_prompts:  # twice the fresh prompts: iteration 1's and iteration 2's together (a timing probe only)
        both = concatenate_datasets([load_from_disk(str(base / f"data/iteration_{t}")) for t in (1, 2)])
        with atomic_dir(dest / "data/iteration_1", run.stamp("prompts")) as tmp:
            both.save_to_disk(str(tmp))
    stats = iteration(run, prepare_loop(cfg, run, gold_reward_of(cfg)), 1)
    return sum(v for k, v in stats["phase_seconds"].items() if k != "evaluate")


def run_bench(
    preset: str = "tiny", seeds: int = 3, out_dir: str | Path = "bench", overrides: dict[str, Any] | None = None,
    scaling: bool = True, peer: bool = True,
) -> dict[str, Any]:
    overrides = dict(overrides or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_seed = load_config(preset, overrides).runtime.seed
    per_seed, wall = {}, {}
    for i in range(seeds):
        seed = base_seed + i
        print(f"bench: seed {seed} ({i + 1}/{seeds})", flush=True)
        start = time.time()
        results = run_pipeline(preset, out / f"seed_{seed}", overrides | {"runtime.seed": seed}, notebooks=BENCH_NOTEBOOKS,
                               progress=False)
        wall[seed] = time.time() - start
        per_seed[seed] = _seed_metrics(results)
    keys = sorted(set().union(*per_seed.values()))
    aggregate = {k: _mean_std([m[k] for m in per_seed.values() if k in m]) for k in keys}
    report: dict[str, Any] = {
        "preset": preset, "overrides": overrides, "seeds": list(per_seed), "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "per_seed": per_seed, "aggregate": aggregate, "pipeline_seconds": wall,
        # ru_maxrss of the waited-for kernels, in KiB on Linux: the largest single notebook process.
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    first = out / f"seed_{base_seed}"
    cfg = load_config(preset, overrides | {"runtime.seed": base_seed})
    if scaling:
        k = cfg.online.k
        seed_ov = overrides | {"runtime.seed": base_seed}
        t1 = _time_iteration(first, out / "scaling/base", preset, seed_ov, double_prompts=False)
        t2 = _time_iteration(first, out / "scaling/prompts_x2", preset, seed_ov, double_prompts=True)
        tk = _time_iteration(first, out / "scaling/k_x2", preset, seed_ov | {"online.k": 2 * k}, double_prompts=False)
        report["scaling"] = {"base_seconds": t1, "prompts_x2_seconds": t2, "k_x2_seconds": tk,
                             "prompts_x2_ratio": t2 / t1, "k_x2_ratio": tk / t1}
    if peer:
        from .data import gold_reward_of
        from .peer import run_online_dpo_peer

        budget = cfg.online.iterations * cfg.world.n_iteration_prompts * cfg.online.k
        report["peer"] = run_online_dpo_peer(cfg, RunDir(first, cfg), gold_reward_of(cfg), budget, out / "peer")
        last = json.loads((first / "results.json").read_text())
        report["peer"]["ours_win_rate_vs_sft"] = last["online_dpo"]["iterations"][-1].get("win_rate_vs_sft")
        report["peer"]["ours_online_seconds"] = last["timings"]["online_dpo"]
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def render_markdown(report: dict[str, Any]) -> str:
    agg = report["aggregate"]
    fmt = lambda k: f"{agg[k]['mean']:.3f} ± {agg[k]['std']:.3f}" if k in agg else "n/a"
    lines = [
        f"# Benchmark: preset `{report['preset']}`, seeds {report['seeds']}",
        "",
        f"Run on {report['date']} on {report['machine']}; peak memory of one notebook process "
        f"{report['peak_memory_mib']:.0f} MiB.",
        "",
        "| measure | mean ± std |",
        "|---|---|",
    ]
    for key in agg:
        lines.append(f"| {key} | {fmt(key)} |")
    lines += ["", "Per seed:", "", "| seed | " + " | ".join(agg) + " |", "|---" * (len(agg) + 1) + "|"]
    for seed, m in report["per_seed"].items():
        lines.append(f"| {seed} | " + " | ".join(f"{m[k]:.3f}" if k in m else "" for k in agg) + " |")
    if "scaling" in report:
        s = report["scaling"]
        lines += [
            "", "## Scaling of one online iteration (generate + score + pair + train)", "",
            f"- base: {s['base_seconds']:.1f}s; 2x prompts: {s['prompts_x2_seconds']:.1f}s "
            f"(x{s['prompts_x2_ratio']:.2f}; goal at most x2.1); 2x K: {s['k_x2_seconds']:.1f}s (x{s['k_x2_ratio']:.2f}).",
        ]
    if "peer" in report:
        p = report["peer"]
        lines += [
            "", "## The fully online peer at equal generation budget", "",
            f"TRL's OnlineDPOTrainer, same SFT model, same reward model, {p.get('samples_generated')} generated samples: "
            f"gold win rate vs SFT {p.get('win_rate_vs_sft', float('nan')):.3f} in {p['seconds']:.1f}s; "
            f"ours (batch-iterative, seed {report['seeds'][0]}) {p['ours_win_rate_vs_sft']:.3f} in "
            f"{p['ours_online_seconds']:.1f}s.",
            "",
            "The paper's loop samples a large batch from a frozen policy and then trains on it, so the policy changes "
            "only T times; the fully online trainer samples from the current policy and updates it at every step, "
            "so its samples are always on-policy but each update sees a small batch.",
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ generation throughput


def generation_throughput(
    cfg, model_path: str, batch_sizes: list[int], caches: list[str], new_tokens: int, out_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Tokens per second of HF sampling for each (sequences per call, KV cache) pair, on this machine.

    The online loop's rollout uses ``online.generation_batch_size`` and ``online.cache_implementation``;
    this measures the alternatives with the same sampling settings (K = ``online.k``, temperature,
    top_p) so the choice is measured, not assumed. Each setting samples twice its batch (two calls)
    after one warm-up call; throughput counts generated tokens, padding excluded.

    Usage::

        rows = generation_throughput(cfg, "runs/tiny/models/sft", [64, 256], ["dynamic", "static"], 16)
    """
    import torch

    from .generation import HFGenerator
    from .models import load_causal_lm, load_tokenizer, resolve_device
    from .world import ToyWorld

    o, device = cfg.online, resolve_device(cfg)
    model, tok = load_causal_lm(model_path, cfg), load_tokenizer(model_path, cfg)
    texts = [ins.text for ins in ToyWorld.from_recipe().all_instructions()]
    rows = []
    for cache in caches:
        for batch in batch_sizes:
            n_prompts = 2 * max(1, batch // o.k)
            prompts = [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n_prompts)]
            gen = HFGenerator(model, tok, device, batch, cache)
            gen.generate(prompts[: max(1, batch // o.k)], o.k, o.temperature, o.top_p, new_tokens, seed=0, progress=False)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            gen.generate(prompts, o.k, o.temperature, o.top_p, new_tokens, seed=1, progress=False)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            rows.append({"cache": cache, "sequences_per_call": batch, "prompts": n_prompts, "k": o.k,
                         "new_tokens": gen.new_tokens, "seconds": seconds, "tokens_per_second": gen.new_tokens / seconds})
            print(f"{cache:>8} cache, {batch:>5} sequences per call: {gen.new_tokens / seconds:,.0f} new tokens/s "
                  f"({gen.new_tokens} tokens in {seconds:.2f}s)", flush=True)
    if out_path is not None:
        atomic_write_json(out_path, {"device": device, "model": str(model_path), "max_new_tokens": new_tokens,
                                     "torch": torch.__version__, "rows": rows})
    return rows
