"""Every phase of the recipe as a module entry point, for scripts and ``accelerate launch``.

Usage::

    python -m rlhf_utils.stage sft --preset tiny --run-dir runs/tiny       # also reward_model, preference_model
    python -m rlhf_utils.stage pair --iteration 1 --run-dir runs/tiny      # generate, score, pair (or: iteration)
    python -m rlhf_utils.stage dpo --iteration 1 --run-dir runs/tiny       # DPO on iteration 1's pairs
    python -m rlhf_utils.stage offline_dpo --run-dir runs/tiny             # the equal-budget offline baseline
    accelerate launch --config_file CONFIG -m rlhf_utils.stage dpo --iteration 1 --preset runs/paper/config.yaml

Each stage does exactly what its notebook does (same functions, same artifacts and fingerprints),
so the notebooks and these commands can be mixed on one run dir. Errors (a bad key, a missing
or stale upstream artifact) exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, parse_override

TRAINING = ("sft", "reward_model", "preference_model", "dpo", "offline_dpo")
SAMPLING = ("generate", "score", "pair", "iteration")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rlhf_utils.stage", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=TRAINING + SAMPLING)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--run-dir", default="")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    p.add_argument("--iteration", type=int, default=1, help="online iteration (generate, score, pair, iteration, dpo)")
    return p


def run_sampling(stage: str, cfg, run, world, t: int) -> None:
    """generate / score / pair one iteration (each step reused when finished with the same settings)."""
    from .generation import sample_iteration
    from .online import iteration, prepare_loop
    from .pairs import pair_iteration
    from .scoring import score_iteration

    loop = prepare_loop(cfg, run, world.gold_reward if world else None)
    if stage == "iteration":
        print(json.dumps(iteration(run, loop, t), indent=2))
        return
    samples = sample_iteration(run, t, loop.prompts[t], loop.tok)
    if stage in ("score", "pair"):
        scored = score_iteration(run, t, samples, loop.judge, loop.gold)
        if stage == "pair":
            print(json.dumps(pair_iteration(run, t, scored)[1]))
    print(f"{stage}: iteration {t} done under {run.iter_dir(t).relative_to(run.path)}")


def run_training(stage: str, cfg, run, world, t: int) -> None:
    """One training stage; under ``accelerate launch`` the first process prepares its inputs, the others reuse them."""
    from accelerate import PartialState
    from datasets import load_from_disk

    from .data import clean_preferences, prepare_data
    from .models import prepare_initial_policy, prepare_scorer_start, resolve_device
    from .trainers import train_dpo, train_preference_model, train_reward_model, train_sft

    # cpu=True makes a group launched on a machine without GPUs a gloo MULTI_CPU group.
    state = PartialState(cpu=resolve_device(cfg) == "cpu")
    if state.is_main_process:
        print(f"{stage}: {state.num_processes} process(es), {state.distributed_type}", flush=True)
    with state.main_process_first():
        splits = prepare_data(cfg, run)
        if stage == "sft":
            start = prepare_initial_policy(cfg, run, world.vocabulary() if world else None)
        elif stage in ("reward_model", "preference_model"):
            pairs = clean_preferences(splits["preference"], "preference")
            start = prepare_scorer_start(cfg, run, stage)
        elif stage == "dpo":
            from .artifacts import reusable
            from .trainers import training_pairs

            # The pairs come from the pair step (notebook 04 makes them before it launches DPO), so a DPO
            # rank loads no judge; run from a script without them, the first process makes them here.
            if state.is_main_process and not reusable(run.iter_dir(t) / "pairs", run.stamp(f"pair:{t}"), quiet=True):
                run_sampling("pair", cfg, run, world, t)
            pairs = load_from_disk(str(run.require(f"online/iter_{t}/pairs", "04_online_iterative_dpo.ipynb", f"pair:{t}")))
            pairs = training_pairs(run, t, pairs)
    if stage == "sft":
        log = train_sft(cfg, start, splits["sft"], run / "models/sft", stamp=run.stamp("sft"))
    elif stage == "reward_model":
        log = train_reward_model(cfg, start, pairs, run / "models/reward_model", stamp=run.stamp("reward_model"))
    elif stage == "preference_model":
        log = train_preference_model(cfg, start, pairs, run / "models/preference_model", stamp=run.stamp("preference_model"))
    elif stage == "dpo":
        log = train_dpo(cfg, run.policy_path(t - 1), run.reference_path(t), pairs, run.policy_path(t),
                        stamp=run.stamp(f"policy:{t}"))
    else:  # offline_dpo: the budget of the finished online run; launched, the processes only train it
        from .online import iteration, offline_baseline, offline_budget, prepare_loop, train_offline_dpo

        loop = prepare_loop(cfg, run, world.gold_reward if world else None)
        online = [iteration(run, loop, s) for s in range(1, cfg.online.iterations + 1)]
        if state.num_processes == 1:
            print(offline_baseline(run, loop, online))  # trained (or launched), then evaluated
            return
        log = train_offline_dpo(run, *offline_budget(run, loop, online))
    print(f"{stage}: done in {log.seconds:.1f}s")


def main(argv: list[str] | None = None) -> int:
    from .session import start

    args = parser().parse_args(argv)
    try:
        cfg, run, world = start(args.preset, args.run_dir, dict(parse_override(s) for s in args.set))
        (run_training if args.stage in TRAINING else run_sampling)(args.stage, cfg, run, world, args.iteration)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rlhf_utils.stage: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
