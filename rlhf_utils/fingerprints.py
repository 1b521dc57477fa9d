"""What each artifact of a run depends on, and the fingerprint that records it.

Every artifact (datasets, checkpoints, samples, scores, pairs, stats, eval files) is written
with a :class:`Stamp`: a hash of the configuration keys its phase reads and of the stamps of
the phases it was built from, as :data:`DEPENDS_ON` lists them. When a phase finds its
artifact, it compares stamps:

* the same: the artifact is reused, and one line says so;
* different: it is redone, and one line names the keys that changed (or the upstream phase
  that did); everything downstream follows, since its stamp holds this one.

Usage::

    stamps = Fingerprints(cfg)
    stamps("sft").digest                 # hex; changes with any sft.* key, the data or the initial model
    stamps("pair:2").upstream            # {"score:2": "..."}

Speed knobs are in no fingerprint (:data:`SPEED_KNOBS`): they change how fast a phase runs,
not what it computes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .config import Config

# phase: (configuration keys it reads, phases it is built from). A section name ("sft") stands
# for every key in it. "{t}" is the online iteration and "{t-1}" the one before; "policy:0" is
# the SFT model. Four upstream names are resolved from the configuration, in `_upstream`:
# "start:<model>" (models.<model>: this run's SFT, the tiny init, or a hub id already among the
# keys), "judge" (online.scorer), "reference:{t}" (online.reference) and "earlier_pairs:{t}"
# (iterations 1..t-1's pairs when online.accumulate is on).
DEPENDS_ON: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # The toy world's training prompts are what its eval and online prompts leave of one pool, so the data
    # depend on the online prompt budget (iterations x prompts each), not on how it is cut into iterations.
    "data": (("data.recipe", "world.n_sft_prompts", "world.n_pref_prompts", "world.n_eval_prompts",
              "world.teacher_skill", "world.annotator_temperature", "world.annotator_length_bias", "world.offline_writers",
              "derived.online_prompt_pool", "derived.recipe_sha256", "runtime.seed"), ()),
    # Each iteration's fresh prompts (the toy world cuts the pool; a hub recipe names one set per iteration).
    "prompts": (("online.iterations", "world.n_iteration_prompts"), ("data",)),
    "init": (("models.policy", "models.tiny", "models.trust_remote_code", "runtime.seed"), ("data",)),
    "sft": (("sft", "models.lora", "runtime.precision"), ("data", "init")),
    "reward_model": (("reward_model", "models.reward_model", "models.tiny", "models.lora", "runtime.precision"),
                     ("data", "start:reward_model")),
    "preference_model": (("preference_model", "models.preference_model", "models.tiny", "models.lora", "runtime.precision"),
                         ("data", "start:preference_model")),
    # data.max_prompt_length drops over-long prompts from the iteration and evaluation prompts.
    "eval:sft": (("eval", "data.max_prompt_length"), ("data", "sft", "reward_model")),
    "generate:{t}": (("online.k", "online.prompts_per_iteration", "online.temperature", "online.top_p",
                      "online.max_new_tokens", "data.max_prompt_length"), ("prompts", "policy:{t-1}")),
    "score:{t}": (("online.scorer",), ("generate:{t}", "judge")),
    "pair:{t}": (("online.selection", "online.length_penalty", "online.margin"), ("score:{t}",)),
    "policy:{t}": (("dpo", "online.reference", "online.accumulate", "models.lora", "runtime.precision"),
                   ("pair:{t}", "earlier_pairs:{t}", "policy:{t-1}", "reference:{t}")),
    "eval:iter_{t}": (("eval",), ("policy:{t}", "eval:sft")),
    # Offline DPO spends the online run's budget (its pairs and optimizer steps), so it follows the last iteration.
    "offline_dpo": (("dpo", "models.lora", "runtime.precision"), ("data", "sft", "policy:{T}")),
    "eval:offline_dpo": (("eval",), ("offline_dpo", "eval:sft")),
}

SPEED_KNOBS = (
    "online.backend", "online.tensor_parallel_size", "online.vllm_gpu_memory_utilization", "online.data_parallel_size",
    "online.generation_batch_size", "online.cache_implementation", "online.score_batch_size",
    "runtime.device", "runtime.num_threads", "runtime.gradient_checkpointing", "runtime.accelerate_config",
    "runtime.launch_processes",
)


@dataclass(frozen=True)
class Stamp:
    """A phase's fingerprint: the settings it read, the stamps of its inputs, and their hash."""

    phase: str
    settings: dict[str, Any]
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        blob = json.dumps({"settings": self.settings, "upstream": self.upstream}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"phase": self.phase, "digest": self.digest, "settings": self.settings, "upstream": self.upstream}

    def changes(self, stored: dict[str, Any] | None) -> list[str]:
        """What differs from a stored record, in words (empty when the digests match)."""
        if not stored:
            return ["no fingerprint (written by an older version)"]
        if stored.get("digest") == self.digest:
            return []
        old = stored.get("settings", {})
        out = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in self.settings.items() if old.get(k) != v]
        out += [f"{name} changed" for name, d in self.upstream.items() if stored.get("upstream", {}).get(name) != d]
        return out or ["its fingerprint differs"]


def online_prompt_pool(cfg: Config) -> int | None:
    """The toy world's fresh prompts over all iterations (None for a hub recipe, whose iteration sets are its own)."""
    from .data import is_toy_world

    return cfg.world.n_iteration_prompts * cfg.online.iterations if is_toy_world(cfg) else None


def recipe_sha256(cfg: Config) -> str | None:
    """The content hash of the data recipe file (None when the name resolves to no file)."""
    from .config import ConfigError
    from .recipes import recipe_path

    try:
        return hashlib.sha256(recipe_path(cfg.data.recipe).read_bytes()).hexdigest()[:16]
    except ConfigError:
        return None


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out |= _flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


class Fingerprints:
    """The stamp of every phase of one configuration (computed on demand, memoised)."""

    def __init__(self, cfg: Config):
        from .models import resolve_precision

        self.cfg = cfg
        self.values = _flat(cfg.to_dict())
        self.values["runtime.precision"] = resolve_precision(cfg)  # "auto" is resolved: the run's real dtype
        self.values["derived.online_prompt_pool"] = online_prompt_pool(cfg)
        self.values["derived.recipe_sha256"] = recipe_sha256(cfg)  # a recipe edited in place redoes the data
        self._memo: dict[str, Stamp] = {}

    def __call__(self, phase: str) -> Stamp:
        if phase not in self._memo:
            template, t = _template(phase)
            keys, upstream = DEPENDS_ON[template]
            settings = {k: v for k, v in self.values.items() if any(k == s or k.startswith(f"{s}.") for s in keys)}
            names = [n for u in upstream for n in self._upstream(u, t)]
            self._memo[phase] = Stamp(phase, settings, {n: self(n).digest for n in names})
        return self._memo[phase]

    def _upstream(self, name: str, t: int | None) -> list[str]:
        o = self.cfg.online
        if t is not None:
            name = name.replace("{t-1}", str(t - 1)).replace("{t}", str(t))
        name = name.replace("{T}", str(o.iterations))
        if name == "policy:0":
            return ["sft"]
        if name.startswith("start:"):
            source = getattr(self.cfg.models, name.split(":")[1])
            return {"sft": ["sft"], "tiny": ["init"]}.get(source, [])  # a hub id is among the settings
        if name == "judge":
            return ["preference_model" if o.scorer == "pm" else "reward_model"]
        if name.startswith("earlier_pairs:"):
            return [f"pair:{s}" for s in range(1, t)] if o.accumulate else []
        if name.startswith("reference:"):
            return ["sft"] if o.reference == "sft" else []  # "previous" is policy:{t-1}, already there
        return [name]


def _template(phase: str) -> tuple[str, int | None]:
    """``pair:2`` -> (``pair:{t}``, 2); ``eval:iter_3`` -> (``eval:iter_{t}``, 3); ``sft`` -> (``sft``, None)."""
    head, _, tail = phase.rpartition(":") if ":" in phase else ("", "", phase)
    digits = tail.removeprefix("iter_")
    if head and digits.isdigit():
        return f"{head}:{tail[: len(tail) - len(digits)]}{{t}}", int(digits)
    if phase not in DEPENDS_ON:
        raise KeyError(f"no phase {phase!r} in DEPENDS_ON (phases: {', '.join(DEPENDS_ON)})")
    return phase, None
