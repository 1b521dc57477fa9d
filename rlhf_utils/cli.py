"""``rlhf-workflow``: the command line.

Usage::

    rlhf-workflow run --preset tiny [--run-dir DIR] [--seed N] [--set sft.learning_rate=1e-3 ...] [--resume]
    rlhf-workflow config --preset paper [--set ...]     # print the resolved configuration
    rlhf-workflow presets                               # list the presets
    rlhf-workflow notebooks                             # re-execute the committed notebooks in place

A bad preset, key or value exits with status 2 and one line naming the key, before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from .config import ConfigError, list_presets, load_config, parse_override


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
    run.add_argument("--resume", action="store_true", help="keep the run dir and skip the phases already finished")

    cfg = sub.add_parser("config", help="print the resolved configuration as YAML")
    _add_config_args(cfg)

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
            print(yaml.safe_dump(load_config(args.preset, _overrides(args)).to_dict(), sort_keys=False), end="")
        elif args.command == "run":
            from .pipeline import run_pipeline

            results = run_pipeline(
                args.preset,
                args.run_dir,
                _overrides(args),
                notebooks=args.notebooks,
                progress=not args.no_progress,
                resume=args.resume,
            )
            print(json.dumps(results, indent=2, sort_keys=True))
        elif args.command == "notebooks":
            from .pipeline import refresh_notebooks

            refresh_notebooks(args.notebooks)
    except (ConfigError, FileNotFoundError) as err:
        print(f"rlhf-workflow: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
