"""Training stages as a module entry point, for scripts and ``accelerate launch``.

Usage::

    python -m rlhf_utils.train sft --preset tiny --run-dir runs/tiny
    python -m rlhf_utils.train reward_model --preset tiny
    python -m rlhf_utils.train preference_model --preset tiny
    python -m rlhf_utils.train dpo --iteration 1 --preset tiny     # after `python -m rlhf_utils.online pair --iteration 1`
    accelerate launch --config_file CONFIG -m rlhf_utils.train dpo --iteration 1 --preset paper

Each stage does exactly what its notebook does (same functions, same artifacts), so the
notebooks and these commands can be mixed on one run dir.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, parse_override

STAGES = ("sft", "reward_model", "preference_model", "dpo", "offline_dpo")


def stage_parser(prog: str, stages: tuple[str, ...]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("stage", choices=stages)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--run-dir", default="")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    p.add_argument("--iteration", type=int, default=1, help="online iteration (dpo, generate, score, pair)")
    return p


def open_run(args: argparse.Namespace):
    from .session import start

    return start(args.preset, args.run_dir, dict(parse_override(s) for s in args.set))


def run_stage(stage: str, cfg, run, world, iteration: int) -> None:
    from accelerate import PartialState

    from .data import clean_preferences, prepare_data
    from .models import prepare_initial_policy, prepare_scorer_start
    from .training import train_dpo, train_preference_model, train_reward_model, train_sft

    # Under `accelerate launch` the first process builds (or finds) every input; the others then reuse it.
    from .models import resolve_device

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
        else:
            from .online import OnlineLoop

            loop = OnlineLoop(cfg, run, world)
            if stage == "offline_dpo":
                stats = [loop.iteration(t) for t in range(1, cfg.online.iterations + 1)]
            else:
                pairs, _ = loop.pair(iteration, loop.score(iteration, loop.generate(iteration)))
    if stage == "sft":
        log = train_sft(cfg, start, splits["sft"], run / "models/sft", stamp=run.stamp("sft"))
    elif stage == "reward_model":
        log = train_reward_model(cfg, start, pairs, run / "models/reward_model", stamp=run.stamp("reward_model"))
    elif stage == "preference_model":
        log = train_preference_model(cfg, start, pairs, run / "models/preference_model", stamp=run.stamp("preference_model"))
    elif stage == "offline_dpo":
        print(loop.offline_baseline(stats))
        return
    else:
        log = train_dpo(
            cfg, loop.policy_path(iteration - 1), loop.reference_path(iteration),
            loop.training_pairs(iteration, pairs), loop.policy_path(iteration), stamp=run.stamp(f"policy:{iteration}"),
        )
    print(f"{stage}: done in {log.seconds:.1f}s")


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m rlhf_utils.train", STAGES).parse_args(argv)
    try:
        cfg, run, world = open_run(args)
        run_stage(args.stage, cfg, run, world, args.iteration)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rlhf_utils.train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
