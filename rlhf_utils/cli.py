"""``rlhf-workflow``: the command line.

Usage::

    rlhf-workflow run --preset tiny [--run-dir DIR] [--seed N] [--set sft.learning_rate=1e-3 ...] [--resume]
    rlhf-workflow run --from 04 --run-dir DIR --set online.selection=random   # re-run 04 onward; 01-03's models reused
    rlhf-workflow config --preset paper [--set ...]     # print the resolved configuration
    rlhf-workflow config --preset tiny --diff           # only what differs from the paper, with the preset's comments
    rlhf-workflow presets                               # list the presets
    rlhf-workflow notebooks                             # re-execute the committed notebooks in place
    rlhf-workflow bench --preset tiny --seeds 3         # the benchmark: bench/report.json and bench/report.md
    rlhf-workflow sweep --preset tiny --grid sweeps/paper_ablations.yaml --seeds 3 [--out DIR] [--resume]
    rlhf-workflow rehearse [--run-dir DIR]              # every notebook on the mini hub, colab_t4's structure
    rlhf-workflow bench-generation --model runs/tiny/models/sft --batch-sizes 64 256 --caches dynamic static
    rlhf-workflow launch dpo --iteration 1 --preset paper --run-dir /shared/runs/paper \
        --nodes 2 --node-rank 0 --main-ip 10.0.0.1       # one training stage over N nodes (run on each)

A bad preset, key or value, recipe source or hub id exits with status 2 and one paragraph naming
it, before any work; so does a notebook that fails, with its cell, its error and the path of the
executed notebook that holds the full trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import (
    ConfigError,
    diff_from_paper,
    format_value,
    list_presets,
    load_config,
    parse_override,
    preset_comments,
)
from .pipeline import NotebookFailed


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = dict(parse_override(text) for text in args.set or [])
    if getattr(args, "seed", None) is not None:
        out["runtime.seed"] = args.seed
    return out


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="preset name or YAML path (default: tiny)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one knob, e.g. dpo.beta=0.05")
    p.add_argument("--seed", type=int, help="shortcut for --set runtime.seed=N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-workflow", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the notebooks in order with papermill")
    _add_config_args(run)
    run.add_argument("--run-dir", default=None, help="output directory (default: runs/<preset>)")
    run.add_argument("--notebooks", nargs="+", help="run only these notebooks (file names)")
    run.add_argument("--no-progress", action="store_true", help="hide per-cell progress bars")
    run.add_argument("--resume", action="store_true",
                     help="keep the run dir: phases finished with the same settings are reused, the others redone")
    run.add_argument("--from", dest="start_from", metavar="NN",
                     help="run the notebooks from this one on (e.g. 04), keeping the run dir (implies --resume)")

    cfg = sub.add_parser("config", help="print the resolved configuration as YAML")
    _add_config_args(cfg)
    cfg.add_argument("--diff", action="store_true",
                     help="print only the keys that differ from the paper defaults (key: paper -> preset  # why)")

    bench = sub.add_parser("bench", help="run the pipeline over several seeds; write bench/report.{json,md}")
    _add_config_args(bench)
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds, counted up from runtime.seed")
    bench.add_argument("--out", default="bench", help="output directory (default: bench)")
    bench.add_argument("--no-scaling", action="store_true", help="skip the scaling measurements")
    bench.add_argument("--no-peer", action="store_true", help="skip TRL's fully online peer")

    sweep = sub.add_parser("sweep", help="run a grid of variants over seeds; write <out>/report.{json,md} and plots")
    _add_config_args(sweep)
    sweep.add_argument("--grid", required=True, help="grid file, e.g. sweeps/paper_ablations.yaml")
    sweep.add_argument("--seeds", type=int, default=3, help="number of seeds, counted up from runtime.seed")
    sweep.add_argument("--out", default=None, help="output directory (default: runs/sweeps/<grid name>)")
    sweep.add_argument("--resume", action="store_true", help="keep finished variants and artifacts; redo the rest")

    gen = sub.add_parser("bench-generation", help="tokens/s of HF sampling per batch size and KV cache")
    _add_config_args(gen)
    gen.add_argument("--model", required=True, help="a saved policy (directory or hub id), e.g. runs/tiny/models/sft")
    gen.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024], help="sequences per generate call")
    gen.add_argument("--caches", nargs="+", choices=["dynamic", "static"], default=["dynamic", "static"])
    gen.add_argument("--new-tokens", type=int, default=None, help="max new tokens (default: online.max_new_tokens)")
    gen.add_argument("--out", default=None, help="also write the rows to this JSON file")

    reh = sub.add_parser("rehearse", help="run every notebook on a local mini hub with colab_t4's structure (CPU, offline)")
    reh.add_argument("--run-dir", default=None, help="output directory (default: runs/rehearsal)")
    reh.add_argument("--hub-dir", default=None, help="where the mini hub is built (default: runs/mini_hub)")

    lau = sub.add_parser("launch", help="train one stage with accelerate launch, on this node of N (run it on every node)")
    _add_config_args(lau)
    lau.add_argument("stage", choices=["sft", "reward_model", "preference_model", "dpo", "offline_dpo"])
    lau.add_argument("--iteration", type=int, default=1, help="online iteration (dpo)")
    lau.add_argument("--run-dir", required=True, help="the run dir, on a filesystem every node shares")
    lau.add_argument("--nodes", type=int, default=1)
    lau.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0 .. nodes-1 (node 0 hosts the rendezvous)")
    lau.add_argument("--main-ip", default="127.0.0.1", help="node 0's address, reachable from every node")
    lau.add_argument("--main-port", type=int, default=29500, help="node 0's rendezvous port")
    lau.add_argument("--processes-per-node", type=int, default=None, help="default: the GPUs visible here")
    lau.add_argument("--cpu", action="store_true", help="gloo processes without GPUs (tests): no DeepSpeed config")

    sub.add_parser("presets", help="list the presets")

    nbs = sub.add_parser("notebooks", help="re-execute the committed notebooks in place (tiny preset)")
    nbs.add_argument("--notebooks", nargs="+", help="only these notebooks (file names)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "presets":
            print("\n".join(list_presets()))
        elif args.command == "config":
            cfg = load_config(args.preset, _overrides(args))
            if args.diff:
                comments = preset_comments(args.preset)
                for key, paper, ours in diff_from_paper(cfg):
                    why = f"  # {comments[key]}" if key in comments else ""
                    print(f"{key}: {format_value(paper)} -> {format_value(ours)}{why}")
            else:
                print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        elif args.command == "run":
            from .pipeline import run_pipeline

            results = run_pipeline(
                args.preset,
                args.run_dir,
                _overrides(args),
                notebooks=args.notebooks,
                progress=not args.no_progress,
                resume=args.resume,
                start_from=args.start_from,
            )
            print(json.dumps(results, indent=2, sort_keys=True))
        elif args.command == "bench":
            from .bench import run_bench

            if args.seeds < 1:
                raise ConfigError(f"--seeds: must be >= 1 (got {args.seeds})")
            run_bench(args.preset, args.seeds, args.out, _overrides(args), not args.no_scaling, not args.no_peer)
            print((Path(args.out) / "report.md").read_text())
        elif args.command == "sweep":
            from .sweep import run_sweep

            if args.seeds < 1:
                raise ConfigError(f"--seeds: must be >= 1 (got {args.seeds})")
            report = run_sweep(args.preset, args.grid, args.seeds, args.out, _overrides(args), resume=args.resume)
            print((Path(report["out"]) / "report.md").read_text())
        elif args.command == "rehearse":
            from .rehearsal import RehearsalError, rehearse

            try:
                rehearse(args.run_dir, args.hub_dir)
            except RehearsalError as err:
                print(f"rlhf-workflow: rehearsal failed: {err}", file=sys.stderr)
                return 2
        elif args.command == "bench-generation":
            from .bench import generation_throughput

            cfg = load_config(args.preset, _overrides(args))
            if any(b < 1 for b in args.batch_sizes):
                raise ConfigError(f"--batch-sizes: each must be >= 1 (got {args.batch_sizes})")
            generation_throughput(cfg, args.model, args.batch_sizes, args.caches,
                                  args.new_tokens or cfg.online.max_new_tokens, args.out)
        elif args.command == "launch":
            import torch

            from .launch import node_command, stream

            per_node = args.processes_per_node or torch.cuda.device_count()
            if per_node < 1 or args.nodes < 1 or not 0 <= args.node_rank < args.nodes:
                raise ConfigError(f"--processes-per-node {per_node}, --nodes {args.nodes}, --node-rank {args.node_rank}: "
                                  "need >= 1 process per node (no GPU is visible: pass --processes-per-node) "
                                  "and 0 <= node rank < nodes")
            sets = [*(args.set or []), *([f"runtime.seed={args.seed}"] if args.seed is not None else [])]
            cmd = node_command(args.stage, args.preset, args.run_dir, sets, args.iteration, args.nodes, args.node_rank,
                               args.main_ip, args.main_port, per_node, cpu=args.cpu)
            print("launching:", " ".join(cmd), flush=True)
            return stream(cmd)[0]
        elif args.command == "notebooks":
            from .pipeline import refresh_notebooks

            refresh_notebooks(args.notebooks)
    except (ConfigError, FileNotFoundError) as err:
        print(f"rlhf-workflow: error: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:  # one paragraph; the executed notebook holds the trace
        print(f"rlhf-workflow: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
