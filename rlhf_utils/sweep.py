"""Sweeps: the paper's experiments as a grid of variants, over seeds, each run with papermill.

A grid file (YAML, in ``sweeps/``) names **variants**, each a set of overrides with a label and
the knob it belongs to; ``sweeps`` entries expand one key over a list of values::

    description: what the grid asks
    base: {online.prompts_per_iteration: 128}      # applied to every variant (optional)
    variants:
      - {label: "max_min (paper)", knob: pair rule, set: {}}   # the first variant is the baseline
      - {label: random, knob: pair rule, set: {online.selection: random}}
    sweeps:
      - {knob: DPO beta, key: dpo.beta, values: [0.05, 0.2]}
    peer: true                                      # TRL's OnlineDPOTrainer at the baseline's generated samples

For each seed, notebooks 01-03 run once into ``<out>/seed_<s>/shared``. Every variant then gets
its own run dir, into which each finished artifact of the shared run and of the variants before
it is hard-linked **when its fingerprint equals the one this variant's settings give**
(``rlhf_utils.fingerprints``): a DPO knob shares the SFT, reward and preference models and the
first iteration's samples; a pair rule shares the samples and scores too. The variant then
executes the notebooks it needs (from the first whose models are not shared, through 04), so
each variant leaves executed notebooks under its run dir. Offline DPO at equal budget is read
from the baseline variant's run.

Usage::

    rlhf-workflow sweep --preset tiny --grid sweeps/paper_ablations.yaml --seeds 3 [--out DIR] [--resume]
    report = run_sweep("tiny", "sweeps/paper_ablations.yaml", seeds=3)   # into runs/sweeps/paper_ablations

Output: ``<out>/report.json``, ``<out>/report.md`` and one PNG per knob beside them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from .artifacts import FINGERPRINT, REPO_ROOT, RunDir, atomic_write_json, atomic_write_text, default_run_dir, read_json
from .config import Config, ConfigError, format_value, load_config

GRID_FIELDS = {"description", "base", "variants", "sweeps", "peer"}
VARIANT_FIELDS = {"label", "knob", "set", "vs"}
SWEEP_FIELDS = {"knob", "key", "values", "labels"}
# The notebooks a variant may run, and the phases each one makes (a variant starts at the first
# notebook whose phases it cannot share; 04 always runs, since it is what a variant varies).
UPSTREAM = {"01_sft.ipynb": ("data", "sft"), "02_reward_model.ipynb": ("reward_model",),
            "03_preference_model.ipynb": ("preference_model",)}
ONLINE = "04_online_iterative_dpo.ipynb"
SHARED_BLOCKS = ("sft", "reward_model", "preference_model", "timings")  # results.json blocks of notebooks 01-03
# Per variant and seed: the last iteration's held-out numbers (gold ones only on the toy world).
METRICS = ("win_rate_vs_sft", "gold_reward", "lc_win_rate_vs_sft", "rm_win_rate_vs_sft", "mean_length", "kl_to_ref",
           "online_seconds", "wall_seconds",
           # against offline DPO at equal budget, and how off-policy its data is (nats per token)
           "offline_win_rate", "online_minus_offline_win_rate", "gain_ratio_vs_offline", "offpolicy_distance",
           # the judges the variant's run trained (shared with the baseline unless an upstream knob changed)
           "rm_accuracy", "rm_length_correlation", "pm_accuracy", "pm_position_consistency")


@dataclass
class Variant:
    label: str
    knob: str
    overrides: dict[str, Any] = field(default_factory=dict)
    vs: str | None = None  # the label its effect is measured against (default: the grid's baseline)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", f"{self.knob} {self.label}".lower()).strip("_")


@dataclass
class Grid:
    path: Path
    description: str
    base: dict[str, Any]
    variants: list[Variant]
    peer: bool


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of dotted keys to values (got {type(value).__name__})")
    return {str(k): v for k, v in value.items()}


def _unknown(fields: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(fields) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def load_grid(path: str | Path, preset: str, overrides: dict[str, Any] | None = None) -> Grid:
    """Read and check a grid file: every variant's configuration is loaded and validated, so an
    unknown key, a wrongly typed value or a duplicate label stops here, before any training, with
    one line naming the file, the variant and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping with 'variants' (and optionally base, sweeps, peer)")
    _unknown(raw, GRID_FIELDS, str(path))
    base = _mapping(raw.get("base"), f"{path}: base")
    variants: list[Variant] = []
    for i, v in enumerate(raw.get("variants") or []):
        where = f"{path}: variants[{i}]"
        if not isinstance(v, dict) or "label" not in v:
            raise ConfigError(f"{where}: each variant needs a 'label' (and 'knob', 'set')")
        _unknown(v, VARIANT_FIELDS, where)
        variants.append(Variant(str(v["label"]), str(v.get("knob", "baseline")), _mapping(v.get("set"), f"{where} {v['label']!r}: set"),
                                str(v["vs"]) if v.get("vs") is not None else None))
    for i, s in enumerate(raw.get("sweeps") or []):
        where = f"{path}: sweeps[{i}]"
        if not isinstance(s, dict) or "key" not in s or not isinstance(s.get("values"), list) or not s["values"]:
            raise ConfigError(f"{where}: needs 'key' and a non-empty list 'values'")
        _unknown(s, SWEEP_FIELDS, where)
        labels = s.get("labels") or [f"{s['key']}={format_value(v)}" for v in s["values"]]
        if len(labels) != len(s["values"]):
            raise ConfigError(f"{where}: 'labels' must have one label per value")
        variants += [Variant(str(lab), str(s.get("knob", s["key"])), {s["key"]: v}) for lab, v in zip(labels, s["values"])]
    if not variants:
        raise ConfigError(f"{path}: no variants (give 'variants' or 'sweeps')")
    labels = {v.label for v in variants}
    for v in variants:
        if v.vs is not None and (v.vs not in labels or v.vs == v.label):
            raise ConfigError(f"{path}: variant {v.label!r} ({v.knob}): vs: no other variant is labelled {v.vs!r}")
    seen: set[str] = set()  # run-dir names: two variants may not share one
    for v in variants:
        if v.slug in seen:
            raise ConfigError(f"{path}: variant {v.label!r} ({v.knob}): duplicate label")
        seen.add(v.slug)
        try:
            load_config(preset, {**(overrides or {}), **base, **v.overrides})
        except ConfigError as err:
            raise ConfigError(f"{path}: variant {v.label!r} ({v.knob}): {err}") from None
    return Grid(path, str(raw.get("description", "")), base, variants, bool(raw.get("peer", False)))


# ------------------------------------------------------------------ sharing by fingerprint


def _stored_record(artifact: Path) -> dict[str, Any] | None:
    if artifact.is_dir():
        return read_json(artifact / FINGERPRINT)
    data = read_json(artifact)
    return data.get("fingerprint") if isinstance(data, dict) else None


SHAREABLE = ("data", "models", "online", "eval")  # the run dir's folders of fingerprinted artifacts


def _artifacts(run_dir: Path) -> list[Path]:
    """Every finished, fingerprinted artifact of a run dir: directories holding a fingerprint (data
    splits, models, samples, scores, pairs), and stamped JSON files (rollout, pair and iteration
    stats, eval files). Hidden temporaries are never shared."""
    out: list[Path] = []
    for folder in SHAREABLE:
        root = run_dir / folder
        dirs = [p.parent for p in root.rglob(FINGERPRINT)]
        files = [p for p in root.rglob("*.json") if not any(d in p.parents for d in dirs)]
        out += [p for p in sorted(dirs) + sorted(files)
                if not any(part.startswith(".") for part in p.relative_to(run_dir).parts)]
    return out


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (a copy across file systems). Every phase writes by rename, so a
    later redo in ``dest`` replaces its link and never touches the donor's file."""
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=link)
    else:
        link(str(src), str(dest))


def share_artifacts(donors: list[Path], run: RunDir) -> list[str]:
    """Link into ``run`` every donor artifact whose fingerprint equals the one ``run``'s settings
    give its phase; return the phases shared. Artifacts already in ``run`` are left alone."""
    shared = []
    for donor in donors:
        for artifact in _artifacts(donor):
            rel = artifact.relative_to(donor)
            record = _stored_record(artifact)
            if not record or (run.path / rel).exists():
                continue
            try:
                mine = run.stamp(record["phase"]).digest
            except KeyError:
                continue
            if mine == record.get("digest"):
                _link_tree(artifact, run.path / rel)
                shared.append(record["phase"])
    return sorted(set(shared))


def notebooks_to_run(shared: list[str]) -> list[str]:
    """From the first notebook whose phases were not all shared, through notebook 04."""
    names = list(UPSTREAM)
    for i, name in enumerate(names):
        if not set(UPSTREAM[name]) <= set(shared):
            return names[i:] + [ONLINE]
    return [ONLINE]


# ------------------------------------------------------------------ one variant, one seed


def variant_metrics(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """The last iteration's held-out numbers (its eval file has the LC win rate too), the offline
    baseline's and the gap between them, and the judges' accuracies, read from a finished run dir."""
    results = json.loads((run_dir / "results.json").read_text())
    last = cfg.online.iterations
    summary = json.loads((run_dir / f"eval/iter_{last}.json").read_text())["summary"]
    offline = json.loads((run_dir / "eval/offline_dpo.json").read_text())["summary"]
    keep = lambda d: {k: d[k] for k in METRICS if k in d}
    its = results["online_dpo"]["iterations"]
    rm, pm = results["reward_model"], results["preference_model"]
    out = {
        **keep(summary),
        "online_seconds": sum(s["seconds"] for s in its),
        "per_iteration_win_rate": [s.get("win_rate_vs_sft") for s in its],
        "generated_samples": sum(s["prompts"] for s in _stats(run_dir, last)) * cfg.online.k,
        "offline": keep(offline) | {"online_seconds": results["offline_dpo"]["seconds"]},
        "offpolicy_distance": results["offline_dpo"]["offpolicy_distance"],
        "rm_accuracy": rm["accuracy"], "rm_length_correlation": rm["length_correlation"],
        "pm_accuracy": pm["accuracy"], "pm_position_consistency": pm["position_consistency"],
    }
    if "win_rate_vs_sft" in summary:  # gold numbers: the toy world
        sft_gold = json.loads((run_dir / "eval/sft.json").read_text())["summary"]["gold_reward"]
        out |= {"offline_win_rate": offline["win_rate_vs_sft"],
                "online_minus_offline_win_rate": summary["win_rate_vs_sft"] - offline["win_rate_vs_sft"]}
        if offline["gold_reward"] > sft_gold:  # a ratio of gains only means something when offline DPO gains
            out["gain_ratio_vs_offline"] = (summary["gold_reward"] - sft_gold) / (offline["gold_reward"] - sft_gold)
    return out


def _stats(run_dir: Path, iterations: int) -> list[dict[str, Any]]:
    return [json.loads((run_dir / f"online/iter_{t}/stats.json").read_text())["stats"] for t in range(1, iterations + 1)]


def command_for(preset: str, seed: int, overrides: dict[str, Any]) -> str:
    sets = " ".join(f"--set {k}={format_value(v)}" for k, v in overrides.items() if k != "runtime.seed")
    return f"rlhf-workflow run --preset {preset} --seed {seed}" + (f" {sets}" if sets else "")


def _run_variant(preset: str, vdir: Path, overrides: dict[str, Any], donors: list[Path]) -> dict[str, Any]:
    from .pipeline import run_pipeline

    cfg = load_config(preset, overrides)
    run = RunDir.open(vdir, cfg)
    shared = share_artifacts(donors, run)
    names = notebooks_to_run(shared)
    if names[0] != list(UPSTREAM)[0] and not (vdir / "results.json").exists():
        # The numbers of the shared stages (the notebooks this variant does not run), with their timings.
        done = {k: v for k, v in json.loads((donors[0] / "results.json").read_text()).items() if k in SHARED_BLOCKS}
        done["timings"] = {k: v for k, v in done.get("timings", {}).items() if k in SHARED_BLOCKS}
        atomic_write_json(vdir / "results.json", done)
    start = time.time()
    run_pipeline(preset, vdir, overrides, notebooks=names, progress=False, resume=True, quiet=True)
    return {"shared": shared, "notebooks": names, "wall_seconds": time.time() - start}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = [k for k in METRICS if all(k in m for m in per_seed.values())]
    return {k: _mean_std([m[k] for m in per_seed.values()]) for k in keys}


def effect(variant: dict[int, dict[str, Any]], baseline: dict[int, dict[str, Any]], key: str = "win_rate_vs_sft") -> dict[str, Any] | None:
    """The paired difference from the baseline over the seeds both have (a seed's variants share its
    upstream models, so pairing removes that seed's luck). Resolved when every seed agrees in sign
    and the mean is more than two standard errors from 0; one seed is never resolved."""
    seeds = [s for s in variant if s in baseline and key in variant[s] and key in baseline[s]]
    if not seeds:
        return None
    diffs = [variant[s][key] - baseline[s][key] for s in seeds]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    return {"mean": mean, "se": se if se != float("inf") else None, "seeds": len(seeds),
            "resolved": bool(len(diffs) > 1 and same_sign and abs(mean) > 2 * se)}


# ------------------------------------------------------------------ the sweep


def run_sweep(
    preset: str, grid_path: str | Path, seeds: int = 3, out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None, resume: bool = False, shared_run: str | Path | None = None,
) -> dict[str, Any]:
    """Run every variant of a grid for ``seeds`` seeds (counted up from ``runtime.seed``); write the
    report into ``out_dir`` (default ``runs/sweeps/<grid name>``). ``shared_run``: a finished run
    dir (one seed) whose upstream stages, and whose own results when a variant's settings equal
    its own, are used instead of running them (notebook 06)."""
    from .pipeline import run_pipeline

    overrides = dict(overrides or {})
    grid = load_grid(grid_path, preset, overrides)
    out = Path(out_dir) if out_dir else default_run_dir("sweeps") / Path(grid_path).stem
    if out.exists() and not resume:
        for old in out.glob("seed_*"):
            shutil.rmtree(old)
    out.mkdir(parents=True, exist_ok=True)
    base_seed = load_config(preset, overrides).runtime.seed
    seed_list = [base_seed + i for i in range(seeds)]
    if shared_run is not None and seeds != 1:
        raise ConfigError("shared_run: a finished run dir holds one seed; use seeds=1 with it")
    records: dict[str, dict[int, dict[str, Any]]] = {v.slug: {} for v in grid.variants}  # slug -> seed -> record
    peers: dict[int, dict[str, Any]] = {}
    spent: dict[str, list[float]] = {"shared": [], "variant": []}  # seconds, for the estimate of the time left
    done, total = 0, len(seed_list) * len(grid.variants)
    sweep_start = time.time()
    for seed in seed_list:
        seed_ov = overrides | grid.base | {"runtime.seed": seed}
        seed_dir = out / f"seed_{seed}"
        if shared_run is not None:
            upstream = Path(shared_run)
        elif resume and all(_finished_record(seed_dir / v.slug / "variant.json", load_config(preset, seed_ov | v.overrides),
                                             seed_dir / v.slug, None) for v in grid.variants):
            upstream = seed_dir / "shared"  # every variant of this seed is done: nothing to share
        else:
            upstream = seed_dir / "shared"
            print(f"sweep: seed {seed}: shared stages (notebooks 01-03) ...", flush=True)
            t0 = time.time()
            run_pipeline(preset, upstream, seed_ov, notebooks=list(UPSTREAM), progress=False, resume=True, quiet=True)
            spent["shared"].append(time.time() - t0)
        donors = [upstream]
        for v in grid.variants:
            t0 = time.time()
            record = _variant_record(preset, v, seed, seed_ov | v.overrides, seed_dir, donors,
                                     upstream if shared_run is not None else None, resume)
            records[v.slug][seed], metrics = record, record["metrics"]
            donors.append(Path(record["run_dir"]))
            done += 1
            spent["variant"].append(time.time() - t0)
            left_seeds = len(seed_list) - seed_list.index(seed) - 1
            eta = (statistics.fmean(spent["variant"]) * (total - done)
                   + (statistics.fmean(spent["shared"]) * left_seeds if spent["shared"] else 0.0))
            print(f"sweep: seed {seed} | {v.knob}: {v.label} | " + _line(metrics) + f" | {done}/{total}, ~{eta / 60:.1f} min left",
                  flush=True)
        if grid.peer:
            baseline = records[grid.variants[0].slug][seed]  # the peer starts from its SFT and reward models
            peers[seed] = _peer(preset, seed_ov, Path(baseline["run_dir"]), seed_dir / "peer",
                                baseline["metrics"]["generated_samples"], resume)
            print(f"sweep: seed {seed} | peer: TRL OnlineDPOTrainer | " + _line(peers[seed]), flush=True)
    report = build_report(grid, preset, overrides, seed_list, records, peers, time.time() - sweep_start)
    report["out"] = str(out)
    atomic_write_json(out / "report.json", report)
    figures = plot_knobs(report, out)
    atomic_write_text(out / "report.md", render_markdown(report, figures))
    return report


def _variant_record(preset: str, v: Variant, seed: int, overrides: dict[str, Any], seed_dir: Path,
                    donors: list[Path], shared_run: Path | None, resume: bool) -> dict[str, Any]:
    """One variant at one seed: read back when its run dir finished with these settings (``resume``),
    the shared run itself when that finished with them, else run in its own dir. Its record
    (``variant.json``): the run dir, what it shared, the notebooks it ran, and its numbers."""
    cfg, path = load_config(preset, overrides), seed_dir / v.slug / "variant.json"
    if resume and (record := _finished_record(path, cfg, seed_dir / v.slug, shared_run)) is not None:
        atomic_write_json(path, record)
        return record
    if shared_run is not None and _is_finished(shared_run, cfg):
        vdir, info = shared_run, {"shared": ["all"], "notebooks": [], "wall_seconds": 0.0}
    else:
        vdir = seed_dir / v.slug
        info = _run_variant(preset, vdir, overrides, donors)
    record = {"label": v.label, "knob": v.knob, "seed": seed, "overrides": _jsonable(overrides), "run_dir": str(vdir),
              "shared_phases": info["shared"], "notebooks": info["notebooks"],
              "metrics": variant_metrics(vdir, cfg) | {"wall_seconds": info["wall_seconds"]}}
    atomic_write_json(path, record)
    return record


def _finished_record(path: Path, cfg: Config, own_dir: Path, shared_run: Path | None) -> dict[str, Any] | None:
    """A variant's record, when its run dir finished with these settings (its fingerprints say so).

    Its run dir is where this sweep puts it now (``own_dir``, or ``shared_run`` for a variant that
    was the shared run itself), not the path the record was written with: a sweep copied or moved
    with its run (a run dir resumed elsewhere) reads its own variants, not the original's."""
    record = read_json(path)
    if record is None:
        return None
    where = shared_run if shared_run is not None and record["shared_phases"] == ["all"] else own_dir
    return record | {"run_dir": str(where)} if _is_finished(where, cfg) else None


def _is_finished(run_dir: Path, cfg: Config) -> bool:
    """The run dir finished notebook 04 with exactly these settings (its last iteration's stats and the
    offline baseline's eval carry this configuration's fingerprints)."""
    run, last = RunDir(run_dir, cfg), cfg.online.iterations
    for rel, phase in [(f"online/iter_{last}/stats.json", f"eval:iter_{last}"), ("eval/offline_dpo.json", "eval:offline_dpo")]:
        try:
            stored = json.loads((run / rel).read_text()).get("fingerprint") or {}
        except (OSError, ValueError):
            return False
        if stored.get("digest") != run.stamp(phase).digest:  # compared, never removed: the run may be another's
            return False
    return True


def _peer(preset: str, overrides: dict[str, Any], base_dir: Path, out: Path, samples: int, resume: bool) -> dict[str, Any]:
    """TRL's fully online trainer from the baseline's SFT and reward models, at its generated samples."""
    from .data import gold_reward_of
    from .peer import run_online_dpo_peer

    path = out / "peer.json"
    if resume and (done := read_json(path)) is not None and done.get("samples") == samples and done.get("overrides") == _jsonable(overrides):
        return done["metrics"]
    cfg = load_config(preset, overrides)
    result = run_online_dpo_peer(cfg, RunDir(base_dir, cfg), gold_reward_of(cfg), samples, out / "model")
    metrics = {k: result[k] for k in METRICS if k in result} | {"online_seconds": result["seconds"],
                                                               "wall_seconds": result["seconds"],
                                                               "generated_samples": result.get("samples_generated")}
    atomic_write_json(path, {"samples": samples, "overrides": _jsonable(overrides), "metrics": metrics})
    return metrics


def _shown(path: Path) -> str:
    """A grid's path relative to the repository when it lies inside it (no machine paths in a report)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def _line(m: dict[str, Any]) -> str:
    parts = [f"gold win rate {m['win_rate_vs_sft']:.3f}" if "win_rate_vs_sft" in m else f"RM win rate {m['rm_win_rate_vs_sft']:.3f}"]
    parts.append(f"length {m['mean_length']:.1f}")
    parts.append(f"{m.get('wall_seconds', 0):.0f}s")
    return ", ".join(parts)


def build_report(grid: Grid, preset: str, overrides: dict[str, Any], seeds: list[int],
                 records: dict[str, dict[int, dict[str, Any]]], peers: dict[int, dict[str, Any]],
                 seconds: float) -> dict[str, Any]:
    per_variant = {slug: {seed: r["metrics"] for seed, r in runs.items()} for slug, runs in records.items()}
    baseline = grid.variants[0]
    by_label = {v.label: v for v in grid.variants}
    rows = []
    for v in grid.variants:
        runs, ref = per_variant[v.slug], by_label[v.vs] if v.vs else baseline
        rows.append({
            "label": v.label, "knob": v.knob, "overrides": _jsonable(grid.base | v.overrides),
            "aggregate": aggregate(runs), "per_seed": {str(s): m for s, m in runs.items()},
            "vs": ref.label,
            "effect_vs_baseline": None if v is baseline else effect(runs, per_variant[ref.slug]),
            "commands": {str(s): command_for(preset, s, overrides | grid.base | v.overrides) for s in runs},
            # What each seed's run shared from the runs before it, and the notebooks it executed.
            "shared_phases": {str(s): r["shared_phases"] for s, r in records[v.slug].items()},
            "notebooks": {str(s): r["notebooks"] for s, r in records[v.slug].items()},
            "run_dirs": {str(s): r["run_dir"] for s, r in records[v.slug].items()},
        })
    offline = {s: m["offline"] for s, m in per_variant[baseline.slug].items()}
    return {
        "grid": _shown(grid.path), "description": grid.description, "preset": preset, "overrides": _jsonable(overrides),
        "seeds": seeds, "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "wall_seconds": seconds, "baseline": baseline.label, "variants": rows,
        "offline_dpo": {"aggregate": aggregate(offline), "per_seed": {str(s): m for s, m in offline.items()},
                        "effect_vs_baseline": effect(offline, per_variant[baseline.slug])},
        "peer": ({"aggregate": aggregate(peers), "per_seed": {str(s): m for s, m in peers.items()},
                  "effect_vs_baseline": effect(peers, per_variant[baseline.slug])} if peers else None),
    }


# ------------------------------------------------------------------ report


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: ``mean ± std`` of an aggregate (the mean alone for one seed), an effect with
    its verdict, or "baseline"."""
    if value is None:
        return "baseline"
    if "resolved" in value:
        verdict = "resolved" if value["resolved"] else ("one seed" if value["seeds"] == 1 else "within noise")
        return f"{value['mean']:+.{digits}f} ({verdict})"
    if value.get("n", 2) == 1:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _fmt(agg: dict[str, dict[str, float]], key: str, digits: int = 3) -> str:
    return format_cell(agg[key], digits) if key in agg else "n/a"


def _effect_text(e: dict[str, Any] | None) -> str:
    return format_cell(e)


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant, then offline DPO and the peer: the table the notebook and report.md show."""
    rows = [{"knob": r["knob"], "variant": r["label"], **r["aggregate"], "effect": r["effect_vs_baseline"], "vs": r.get("vs")}
            for r in report["variants"]]
    rows.append({"knob": "reference lines", "variant": "offline DPO (equal budget)", **report["offline_dpo"]["aggregate"],
                 "effect": report["offline_dpo"]["effect_vs_baseline"]})
    if report.get("peer"):
        rows.append({"knob": "reference lines", "variant": "TRL OnlineDPOTrainer (equal samples)", **report["peer"]["aggregate"],
                     "effect": report["peer"]["effect_vs_baseline"]})
    return rows


def render_markdown(report: dict[str, Any], figures: list[str]) -> str:
    n = len(report["seeds"])
    lines = [
        f"# Sweep: `{report['grid']}`, preset `{report['preset']}`, seeds {report['seeds']}", "",
        report["description"].strip(), "",
        f"Run on {report['date']} on {report['machine']}; wall time {report['wall_seconds'] / 60:.1f} min.", "",
        f"Each cell: mean ± std over {n} seed(s) (the value itself for one seed) of the last iteration on the held-out prompts. Effect: the paired "
        f"difference in gold win rate from the baseline ({report['baseline']}, or the variant named), *resolved* when every seed agrees in sign "
        "and the mean is over two standard errors from 0 (never on one seed).", "",
        "| knob | variant | gold win rate vs SFT | effect | gold reward | LC win rate | RM win rate | length | KL | online s | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table_rows(report):
        agg = {k: v for k, v in row.items() if isinstance(v, dict) and "mean" in v}
        against = f" vs {row['vs']}" if row.get("vs") and row["vs"] != report["baseline"] and row["effect"] else ""
        lines.append(f"| {row['knob']} | {row['variant']} | {_fmt(agg, 'win_rate_vs_sft')} | {_effect_text(row['effect'])}{against} | "
                     f"{_fmt(agg, 'gold_reward')} | {_fmt(agg, 'lc_win_rate_vs_sft')} | {_fmt(agg, 'rm_win_rate_vs_sft')} | "
                     f"{_fmt(agg, 'mean_length', 1)} | {_fmt(agg, 'kl_to_ref', 2)} | {_fmt(agg, 'online_seconds', 0)} | "
                     f"{_fmt(agg, 'wall_seconds', 0)} |")
    lines += ["", "Against offline DPO, and the judges each variant trained (the same as the baseline's unless an upstream "
              "knob changed): the offline data's distance from the SFT model's own samples (nats per token), offline DPO's "
              "gold win rate, the online minus offline gap, online's gold-reward gain over SFT as a multiple of offline's, "
              "the reward model's accuracy and reward-length correlation, the preference model's accuracy and position "
              "consistency.", "",
              "| knob | variant | off-policy distance | offline win rate | online - offline | gain ratio | RM accuracy | "
              "RM length corr. | PM accuracy | PM consistency |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["variants"]:
        agg = r["aggregate"]
        cells = [_fmt(agg, k, 2 if k in ("offpolicy_distance", "gain_ratio_vs_offline") else 3)
                 for k in ("offpolicy_distance", "offline_win_rate", "online_minus_offline_win_rate", "gain_ratio_vs_offline",
                           "rm_accuracy", "rm_length_correlation", "pm_accuracy", "pm_position_consistency")]
        lines.append(f"| {r['knob']} | {r['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (gold win rate vs SFT; RM win rate without a gold reward):", ""]
    for r in report["variants"]:
        vals = ", ".join(f"{s}: {m.get('win_rate_vs_sft', m.get('rm_win_rate_vs_sft')):.3f}" for s, m in r["per_seed"].items())
        lines.append(f"- {r['knob']} / {r['label']}: {vals}")
    lines += ["", "Reproduce one variant and seed in a fresh run dir:", ""]
    for r in report["variants"]:
        seed, cmd = next(iter(r["commands"].items()))
        lines.append(f"- {r['knob']} / {r['label']}: `{cmd}`")
    lines += ["", "'online s' is the compute of the online loop (its iterations, as recorded by the run that made them); "
              "'wall s' is what this variant itself took, after sharing the artifacts its settings allow."]
    if figures:
        lines += [""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(lines) + "\n"


def knob_figures(report: dict[str, Any]) -> dict[str, Any]:
    """One bar chart per knob (gold win rate vs SFT, or the RM's without a gold reward), the baseline
    beside the knob's variants, error bars = std over seeds, offline DPO and the peer as reference
    lines. Returns ``{knob: matplotlib figure}``."""
    import matplotlib.pyplot as plt

    key = "win_rate_vs_sft" if "win_rate_vs_sft" in report["variants"][0]["aggregate"] else "rm_win_rate_vs_sft"
    baseline = report["variants"][0]
    figures = {}
    by_label = {r["label"]: r for r in report["variants"]}
    for knob in dict.fromkeys(r["knob"] for r in report["variants"][1:]):
        mine = [r for r in report["variants"] if r["knob"] == knob]
        # grey bar: the knob's own reference when its variants are measured against one of them, else the baseline
        own = {r["vs"] for r in mine if by_label.get(r.get("vs")) in mine}
        ref = by_label[own.pop()] if len(own) == 1 else baseline
        rows = [ref] + [r for r in mine if r is not ref]
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.2))
        means = [r["aggregate"][key]["mean"] for r in rows]
        stds = [r["aggregate"][key]["std"] for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=["tab:gray"] + ["tab:blue"] * (len(rows) - 1))
        refs = [("offline DPO", report["offline_dpo"], "--"), ("TRL online DPO", report.get("peer"), ":")]
        for name, ref, style in refs:
            if ref and key in ref["aggregate"]:
                ax.axhline(ref["aggregate"][key]["mean"], color="tab:red", ls=style, label=f"{name} (the baseline's budget)")
                means.append(ref["aggregate"][key]["mean"])
        ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
        ax.set(ylabel=key.replace("_", " "), title=f"{knob} ({len(report['seeds'])} seed(s), bars: ± std)")
        ax.set_ylim(max(0.0, min(means) - max(stds) - 0.08), min(1.0, max(means) + max(stds) + 0.04))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        figures[knob] = fig
    return figures


def plot_knobs(report: dict[str, Any], out: Path) -> list[str]:
    """Save :func:`knob_figures` as ``<out>/<knob>.png``; return the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for knob, fig in knob_figures(report).items():
        path = out / (re.sub(r"[^a-z0-9]+", "_", knob.lower()).strip("_") + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(str(path))
    return paths
