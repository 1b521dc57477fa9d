"""Typed run configuration: presets, overrides and validation.

A preset is a YAML file in ``rlhf_utils/presets/`` that sets *every* knob of every
stage. It loads into the :class:`Config` dataclass tree below; the dataclasses carry
no defaults, so a value lives in exactly one place (the preset) and flows from there
into the notebooks, the CLI and the tests.

Usage::

    from rlhf_utils.config import load_config
    cfg = load_config("tiny", {"sft.learning_rate": 1e-3, "runtime.seed": 1})
    cfg.sft.learning_rate      # 0.001

Overrides use dotted keys (``stage.key`` or ``models.lora.r``). Every value is
type-checked against the dataclass field and range-checked by :func:`validate`;
any problem raises :class:`ConfigError` whose message names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A preset or override is invalid. The message names the offending key."""


# --------------------------------------------------------------------------- schema


@dataclass
class WorldConfig:
    """The synthetic task behind the tiny preset (see ``rlhf_utils.world``)."""

    n_sft_prompts: int  # prompts the teacher writes SFT demonstrations for
    n_pref_prompts: int  # prompts of the offline preference set (teacher pairs)
    n_iteration_prompts: int  # fresh prompts per online iteration
    n_eval_prompts: int  # held-out evaluation prompts
    teacher_skill: float  # 0..1: how often the teacher follows each instruction
    annotator_temperature: float  # Bradley-Terry noise on gold differences (>0)
    annotator_length_bias: float  # extra log-odds per word of length difference


@dataclass
class TinyModelConfig:
    """Shape of the Llama-architecture models built from config (tiny preset)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int


@dataclass
class LoraSettings:
    enabled: bool
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    load_in_4bit: bool  # QLoRA through bitsandbytes (GPU only)


@dataclass
class ModelsConfig:
    """Where each model comes from: ``tiny`` builds from config, else a hub id or a local path."""

    policy: str
    reward_model: str
    preference_model: str
    tiny: TinyModelConfig
    lora: LoraSettings
    trust_remote_code: bool


@dataclass
class DataConfig:
    recipe: str  # a file in data_recipes/ (without .yaml)
    max_prompt_length: int  # tokens; longer prompts are dropped with a printed count


@dataclass
class TrainingSettings:
    """Optimisation knobs every training stage has."""

    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    epochs: float
    per_device_batch_size: int
    global_batch_size: int  # made up by gradient accumulation over per-device batches and processes
    max_length: int


@dataclass
class SFTSettings(TrainingSettings):
    packing: bool
    assistant_only_loss: bool
    weight_decay: float


@dataclass
class RewardModelSettings(TrainingSettings):
    weight_decay: float
    center_rewards_coefficient: float


@dataclass
class PreferenceModelSettings(TrainingSettings):
    pass


@dataclass
class DPOSettings(TrainingSettings):
    beta: float
    loss_type: str
    label_smoothing: float
    max_prompt_length: int


@dataclass
class OnlineSettings:
    iterations: int
    k: int  # responses sampled per prompt
    temperature: float
    top_p: float
    max_new_tokens: int
    selection: Literal["max_min", "max_random", "random", "max_min_p"]
    length_penalty: float  # lambda of max_min_p, per character
    margin: float  # drop pairs whose reward gap is below this
    reference: Literal["sft", "previous"]
    accumulate: bool
    scorer: Literal["rm", "pm"]
    backend: Literal["auto", "hf", "vllm"]
    tensor_parallel_size: int  # GPUs per vLLM engine
    vllm_gpu_memory_utilization: float  # share of each GPU's memory a vLLM engine may take (the RM may sit beside it)
    data_parallel_size: int  # generation worker processes, each on its own prompt shard (and GPUs)
    generation_batch_size: int  # sequences (prompts x k) per HF generate call; halved on GPU OOM
    cache_implementation: Literal["dynamic", "static"]  # HF generate's KV cache
    score_batch_size: int  # sequences per forward pass when scoring or computing log-probs (full-vocabulary logits)


@dataclass
class EvalSettings:
    temperature: float
    top_p: float
    max_new_tokens: int
    samples_per_prompt: int
    bootstrap_samples: int


@dataclass
class RuntimeConfig:
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    gradient_checkpointing: bool
    num_threads: int  # torch CPU threads; 0 keeps torch's default
    accelerate_config: str  # several GPUs: ddp, zero2, zero3, fsdp (rlhf_utils/accelerate_configs/) or a YAML path


@dataclass
class Config:
    name: str
    description: str
    world: WorldConfig
    models: ModelsConfig
    data: DataConfig
    sft: SFTSettings
    reward_model: RewardModelSettings
    preference_model: PreferenceModelSettings
    dpo: DPOSettings
    online: OnlineSettings
    eval: EvalSettings
    runtime: RuntimeConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key (valid keys: {', '.join(names)})")
    kwargs = {}
    for name in names:
        where = f"{prefix}.{name}" if prefix else name
        if name not in data:
            raise ConfigError(f"{where}: missing from the preset")
        kwargs[name] = _coerce(data[name], hints[name], where)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"{key}: unknown key ({'.'.join(parts[: i + 1])} is not a section)")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"{key}: unknown key")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set key=value`` string; the value is read as YAML (``1e-4``, ``true``, ``[a, b]``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {raw!r} ({err})") from None
    # YAML reads "1e-4" as a string (no dot); accept it as the number the user meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key, value


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(preset: str | Path) -> Path:
    """A preset name (``tiny``) or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"preset: file {path} does not exist")
        return path
    path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset: unknown preset {preset!r} (choose from {', '.join(list_presets())})")
    return path


def load_config(preset: str | Path = "tiny", overrides: dict[str, Any] | None = None) -> Config:
    """Load a preset, apply dotted-key overrides, type-check and validate it."""
    path = preset_path(preset)
    with open(path) as fh:
        tree = yaml.safe_load(fh)
    if not isinstance(tree, dict):
        raise ConfigError(f"preset: {path} does not hold a mapping")
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree)
    validate(cfg)
    return cfg


# --------------------------------------------------------------------- validation


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {rule} (got {value!r})")


def _positive(cfg: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _require(value > 0, f"{section}.{name}", "must be > 0", value)


def _non_negative(cfg: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _require(value >= 0, f"{section}.{name}", "must be >= 0", value)


def _batching(settings: Any, section: str) -> None:
    _positive(settings, section, "learning_rate", "epochs", "per_device_batch_size", "global_batch_size", "max_length")
    _non_negative(settings, section, "warmup_ratio")
    _require(settings.warmup_ratio < 1, f"{section}.warmup_ratio", "must be < 1", settings.warmup_ratio)
    _require(
        settings.global_batch_size % settings.per_device_batch_size == 0,
        f"{section}.global_batch_size",
        f"must be a multiple of per_device_batch_size ({settings.per_device_batch_size})",
        settings.global_batch_size,
    )


ACCELERATE_CONFIG_DIR = Path(__file__).parent / "accelerate_configs"


def accelerate_config_path(name: str) -> Path:
    """``runtime.accelerate_config`` as a file: a shipped config by name, or a YAML path."""
    path = ACCELERATE_CONFIG_DIR / f"{name}.yaml" if "/" not in name and not name.endswith(".yaml") else Path(name)
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"runtime.accelerate_config: {name!r} is neither one of {shipped} nor a YAML file")
    return path


def validate(cfg: Config) -> None:
    """Range and consistency checks; raises :class:`ConfigError` naming the key."""
    w = cfg.world
    _positive(w, "world", "n_sft_prompts", "n_pref_prompts", "n_iteration_prompts", "n_eval_prompts")
    _positive(w, "world", "annotator_temperature")
    _non_negative(w, "world", "annotator_length_bias")
    _require(0 <= w.teacher_skill <= 1, "world.teacher_skill", "must be in [0, 1]", w.teacher_skill)

    t = cfg.models.tiny
    _positive(t, "models.tiny", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    _positive(t, "models.tiny", "max_position_embeddings")
    _require(
        t.hidden_size % t.num_attention_heads == 0,
        "models.tiny.hidden_size",
        f"must be divisible by num_attention_heads ({t.num_attention_heads})",
        t.hidden_size,
    )
    lora = cfg.models.lora
    _positive(lora, "models.lora", "r", "alpha")
    _require(0 <= lora.dropout < 1, "models.lora.dropout", "must be in [0, 1)", lora.dropout)
    _require(
        not lora.load_in_4bit or lora.enabled, "models.lora.load_in_4bit", "needs models.lora.enabled", True
    )
    for name in ("policy", "reward_model", "preference_model"):
        _require(bool(getattr(cfg.models, name).strip()), f"models.{name}", "must not be empty", "")
    _positive(cfg.data, "data", "max_prompt_length")
    _require(bool(cfg.data.recipe.strip()), "data.recipe", "must not be empty", cfg.data.recipe)

    _batching(cfg.sft, "sft")
    _batching(cfg.reward_model, "reward_model")
    _batching(cfg.preference_model, "preference_model")
    _batching(cfg.dpo, "dpo")
    _non_negative(cfg.reward_model, "reward_model", "center_rewards_coefficient", "weight_decay")
    _non_negative(cfg.sft, "sft", "weight_decay")
    _positive(cfg.dpo, "dpo", "beta", "max_prompt_length")
    _require(0 <= cfg.dpo.label_smoothing < 0.5, "dpo.label_smoothing", "must be in [0, 0.5)", cfg.dpo.label_smoothing)
    _require(
        cfg.dpo.max_prompt_length < cfg.dpo.max_length,
        "dpo.max_prompt_length",
        f"must be < dpo.max_length ({cfg.dpo.max_length})",
        cfg.dpo.max_prompt_length,
    )

    o = cfg.online
    _require(o.iterations >= 1, "online.iterations", "must be >= 1", o.iterations)
    _require(o.k >= 2, "online.k", "must be >= 2 (a pair needs two responses)", o.k)
    _positive(o, "online", "temperature", "max_new_tokens", "tensor_parallel_size", "data_parallel_size", "generation_batch_size",
              "score_batch_size")
    _require(0 < o.top_p <= 1, "online.top_p", "must be in (0, 1]", o.top_p)
    _require(0 < o.vllm_gpu_memory_utilization <= 1, "online.vllm_gpu_memory_utilization", "must be in (0, 1]",
             o.vllm_gpu_memory_utilization)
    _non_negative(o, "online", "length_penalty", "margin")
    _require(
        not (o.accumulate and o.reference == "previous"),
        "online.accumulate",
        "cannot be combined with online.reference=previous (old pairs were sampled from other policies)",
        o.accumulate,
    )

    e = cfg.eval
    _positive(e, "eval", "temperature", "max_new_tokens", "samples_per_prompt", "bootstrap_samples")
    _require(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]", e.top_p)
    _non_negative(cfg.runtime, "runtime", "seed", "num_threads")
    accelerate_config_path(cfg.runtime.accelerate_config)
