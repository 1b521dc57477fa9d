"""Typed run configuration: paper defaults, presets as diffs, overrides and validation.

The dataclasses below carry **the paper's values as their defaults** (Dong et al., 2024,
arXiv 2405.07863, and its reference code; see ``rlhf_utils/presets/paper.yaml``), so
``Config()`` *is* the paper recipe. A preset is a YAML file in ``rlhf_utils/presets/`` that
lists only what it changes (each change with a comment saying why); every key it leaves out
takes the paper default. ``rlhf-workflow config --preset tiny --diff`` (or
:func:`diff_from_paper`) prints exactly those changes. The toy-world knobs (:class:`WorldConfig`)
and the shape of the from-config Llamas (:class:`TinyModelConfig`) have no paper value: their
defaults are the tiny preset's.

Usage::

    from rlhf_utils.config import load_config
    cfg = load_config("tiny", {"sft.learning_rate": 1e-3, "runtime.seed": 1})
    cfg.sft.learning_rate      # 0.001

Overrides use dotted keys (``stage.key`` or ``models.lora.r``). Every value is
type-checked against the dataclass field and range-checked by :func:`validate`;
any problem (an unknown key, a wrong type, a value out of range) raises
:class:`ConfigError` whose message names the key.

Our names and the library arguments they become (the mapping lives in
``rlhf_utils/trainers.py``: ``common_args`` and the stage trainers), where they differ:

- ``epochs`` -> TrainingArguments ``num_train_epochs``
- ``lr_scheduler`` -> ``lr_scheduler_type``
- ``per_device_batch_size`` -> ``per_device_train_batch_size``
- ``global_batch_size`` -> ``gradient_accumulation_steps`` = global / (per-device x processes)
- ``warmup_ratio`` -> ``warmup_steps`` = ratio x total steps (transformers 5 has no ratio)
- ``runtime.gradient_checkpointing`` -> ``activation_checkpointing``
- ``runtime.precision`` / ``runtime.device`` -> ``bf16`` / ``fp16`` / ``use_cpu``
- ``runtime.seed`` -> ``seed`` and ``data_seed``
- ``dpo.loss_type`` -> DPOConfig ``loss_type=[...]`` (a one-item list)
- ``reward_model.center_rewards_coefficient`` -> RewardConfig's, 0 passed as ``None``
- ``models.lora.alpha`` / ``dropout`` -> peft LoraConfig ``lora_alpha`` / ``lora_dropout``
- ``online.selection`` -> the reference code's ``choose_type``; ``online.k`` -> its ``n`` samples
- ``online.vllm_gpu_memory_utilization`` -> vLLM ``LLM(gpu_memory_utilization=...)``
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A preset or override is invalid. The message names the offending key."""


# --------------------------------------------------------------------------- schema
# Defaults are the paper's values (the comments give the paper's figure where a preset
# commonly changes it); WorldConfig and TinyModelConfig default to the tiny preset's values.


@dataclass
class WorldConfig:
    """The synthetic task of the toy-world recipe (see ``rlhf_utils.world``); used only by it."""

    n_sft_prompts: int = 4000  # prompts the teacher writes SFT demonstrations for (toy world only)
    n_pref_prompts: int = 3000  # prompts of the offline preference set, 2 pairs each (toy world only)
    n_iteration_prompts: int = 512  # fresh prompts per online iteration (toy world only; paper: 20K)
    n_eval_prompts: int = 256  # held-out evaluation prompts (toy world only)
    teacher_skill: float = 0.6  # 0..1: how often the teacher follows each instruction (toy world only)
    annotator_temperature: float = 0.1  # Bradley-Terry noise on gold differences, > 0 (toy world only)
    annotator_length_bias: float = 0.35  # extra log-odds per word of length difference (toy world only)
    # Who writes the offline preference set, and so the RM's and PM's training pairs (toy world only):
    # writers of data_recipes/toy_world.yaml other than the SFT teacher, as the paper's pairs came from
    # other LLMs; [teacher] makes the offline data nearly on-policy for the SFT model.
    offline_writers: list[str] = field(default_factory=lambda: ["verbose", "terse", "shuffler", "narrow", "novice"])


@dataclass
class TinyModelConfig:
    """Shape of the Llama-architecture models built from config; used only by ``models.policy: tiny``."""

    hidden_size: int = 128  # width of the from-config Llama (models.policy: tiny only)
    num_hidden_layers: int = 3  # decoder layers (models.policy: tiny only)
    num_attention_heads: int = 4  # must divide hidden_size (models.policy: tiny only)
    intermediate_size: int = 384  # MLP width (models.policy: tiny only)
    max_position_embeddings: int = 64  # longest sequence the tiny model sees (models.policy: tiny only)


@dataclass
class LoraSettings:
    enabled: bool = False  # train LoRA adapters (merged on save); paper: off, every weight is fine-tuned
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA scaling numerator (peft lora_alpha)
    dropout: float = 0.05  # dropout on the LoRA path (peft lora_dropout)
    target_modules: list[str] = field(  # modules that get adapters: every Llama projection
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    load_in_4bit: bool = False  # QLoRA through bitsandbytes (GPU only); needs enabled


@dataclass
class ModelsConfig:
    """Where each model comes from: ``tiny`` builds from config, else a hub id or a local path."""

    policy: str = "meta-llama/Meta-Llama-3-8B"  # SFT starts here; paper: the Llama-3-8B base model
    reward_model: str = "meta-llama/Meta-Llama-3-8B-Instruct"  # BT RM init ("sft": this run's SFT); paper: 8B-Instruct
    preference_model: str = "meta-llama/Meta-Llama-3-8B-Instruct"  # pairwise "A"/"B" model init; paper: 8B-Instruct
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # shape of "tiny" models (tiny recipe only)
    lora: LoraSettings = field(default_factory=LoraSettings)  # LoRA / QLoRA (off in the paper)
    trust_remote_code: bool = False  # let hub models run their own code (off unless a preset needs it)


@dataclass
class DataConfig:
    recipe: str = "rlhflow"  # a file in data_recipes/ (without .yaml); paper: the full RLHFlow hub mixture
    max_prompt_length: int = 1000  # tokens; longer prompts are dropped with a printed count (paper's DPO limit)


@dataclass
class TrainingSettings:
    """Optimisation knobs every training stage has (each stage below sets the paper's own values)."""

    learning_rate: float = 2.0e-5  # peak learning rate
    lr_scheduler: str = "cosine"  # transformers scheduler name; every paper stage is cosine
    warmup_ratio: float = 0.03  # share of the steps spent warming up
    epochs: float = 1.0  # passes over the stage's data
    per_device_batch_size: int = 1  # rows per device per forward pass (memory bound)
    global_batch_size: int = 128  # made up by gradient accumulation over per-device batches and processes
    max_length: int = 2048  # tokens per row (prompt + response)


@dataclass
class SFTSettings(TrainingSettings):
    """Paper SFT (RLHFlow/LLaMA3-SFT): lr 2e-5 cosine, warm-up 5%, batch 128, 8192 tokens packed, 1 epoch."""

    learning_rate: float = 2.0e-5  # paper: 2e-5
    warmup_ratio: float = 0.05  # paper: 5%
    epochs: float = 1.0  # paper: 1 (SFT v2 used 2)
    max_length: int = 8192  # paper: 8192
    packing: bool = True  # pack conversations into full rows (paper: on)
    assistant_only_loss: bool = True  # loss on assistant tokens only (paper: yes)
    weight_decay: float = 0.0  # AdamW weight decay (paper: 0)


@dataclass
class RewardModelSettings(TrainingSettings):
    """Paper Bradley-Terry RM: lr 2e-6 cosine, warm-up 3%, batch 512, 4096 tokens, 1 epoch."""

    learning_rate: float = 2.0e-6  # paper: 2e-6
    global_batch_size: int = 512  # paper: 512
    max_length: int = 4096  # paper: 4096 (longer pairs are dropped by RewardTrainer)
    weight_decay: float = 0.001  # AdamW weight decay (paper: 0.001)
    center_rewards_coefficient: float = 0.0  # pull mean reward to 0 (paper: none)


@dataclass
class PreferenceModelSettings(TrainingSettings):
    """Paper pairwise preference model: lr 5e-6 cosine, batch 128, 3072 tokens, 1 epoch."""

    learning_rate: float = 5.0e-6  # paper: 5e-6
    warmup_ratio: float = 0.01  # the reference config's 40 warm-up steps, about 1% of an epoch
    per_device_batch_size: int = 2  # 8 GPUs x 2 x 8 accumulation = 128
    max_length: int = 3072  # paper: 3072
    # Where the preferred answer sits in a training conversation: "random" (the paper: A or B at random,
    # one conversation per pair) or "both" (two conversations per pair, one per order: twice the rows,
    # and nothing to learn from the position).
    pair_orders: str = "random"


@dataclass
class DPOSettings(TrainingSettings):
    """Paper DPO, one run per online iteration: lr 5e-7 cosine, warm-up 3%, 2 epochs, batch 128, 2048 tokens."""

    learning_rate: float = 5.0e-7  # paper: 5e-7 (full fine-tuning)
    epochs: float = 2.0  # paper: 2
    beta: float = 0.1  # eta, the KL coefficient (paper: 0.1)
    loss_type: str = "sigmoid"  # TRL DPO loss (paper: sigmoid)
    label_smoothing: float = 0.0  # conservative DPO; paper: 0 (some reference runs use 0.1)
    max_prompt_length: int = 1000  # tokens of prompt kept per pair (paper: 1000)


@dataclass
class OnlineSettings:
    """The paper's online iterative loop: 3 iterations, K = 8 samples, best vs worst by the BT RM."""

    iterations: int = 3  # online DPO iterations, each on fresh prompts (paper: 3)
    k: int = 8  # responses sampled per prompt (paper: 8; some runs 4)
    prompts_per_iteration: int = 0  # take the first N of each iteration's prompt set; 0 = all of it (paper: all 20K)
    temperature: float = 1.0  # sampling temperature (paper: 1.0)
    top_p: float = 1.0  # nucleus sampling (paper: 1.0)
    max_new_tokens: int = 2048  # response length cap (paper: 2048)
    selection: Literal["max_min", "max_random", "random", "max_min_p"] = "max_min"  # pair rule (paper: best vs worst)
    length_penalty: float = 0.0  # lambda of max_min_p, per character (paper's variant: 0.001)
    margin: float = 0.0  # drop pairs whose reward gap is below this (equal rewards are always dropped)
    reference: Literal["sft", "previous"] = "sft"  # DPO reference model (paper: the SFT model, fixed)
    accumulate: bool = False  # train on all pairs so far (paper's algorithm) vs this iteration's (its code)
    scorer: Literal["rm", "pm"] = "rm"  # who ranks the K samples (paper: the BT reward model)
    backend: Literal["auto", "hf", "vllm"] = "auto"  # sampler: vLLM when installed, else transformers generate
    tensor_parallel_size: int = 1  # GPUs per vLLM engine (an 8B model fits one 80 GB GPU)
    vllm_gpu_memory_utilization: float = 0.7  # GPU memory share of a vLLM engine (the RM may sit beside it)
    data_parallel_size: int = 8  # generation processes (engines), one prompt shard each; 0: one per visible GPU (paper: 8 GPUs)
    generation_batch_size: int = 1024  # sequences (prompts x k) per HF generate call; halved on GPU OOM
    cache_implementation: Literal["dynamic", "static"] = "dynamic"  # HF generate's KV cache
    score_batch_size: int = 8  # sequences per forward pass when scoring or computing log-probs (full-vocabulary logits)


@dataclass
class EvalSettings:
    temperature: float = 1.0  # sampling temperature of the held-out evaluation
    top_p: float = 1.0  # nucleus sampling of the evaluation
    max_new_tokens: int = 2048  # response length cap of the evaluation (as in training)
    samples_per_prompt: int = 1  # responses per held-out prompt
    bootstrap_samples: int = 1000  # resamples for the confidence intervals


@dataclass
class RuntimeConfig:
    seed: int = 42  # one seed for sampling, data order and init (paper: 42)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when visible, else CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "bf16"  # paper: bf16; auto = bf16 or fp16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = True  # trade compute for activation memory (paper: on)
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    accelerate_config: str = "zero2"  # ddp, zero2, zero3, fsdp (accelerate_configs/) or a YAML path; paper: zero2
    launch_processes: int = 0  # training processes a notebook launches per stage; 0: one per GPU when >= 2 (paper: 8)


@dataclass
class Config:
    name: str = "paper"  # preset name (load_config uses the file's stem when a YAML omits it); names the run dir
    description: str = ""  # one line saying what the preset is for
    world: WorldConfig = field(default_factory=WorldConfig)  # toy-world task (toy_world recipe only)
    models: ModelsConfig = field(default_factory=ModelsConfig)  # where each model comes from
    data: DataConfig = field(default_factory=DataConfig)  # which data recipe
    sft: SFTSettings = field(default_factory=SFTSettings)  # stage 1
    reward_model: RewardModelSettings = field(default_factory=RewardModelSettings)  # stage 2
    preference_model: PreferenceModelSettings = field(default_factory=PreferenceModelSettings)  # stage 3
    dpo: DPOSettings = field(default_factory=DPOSettings)  # stage 4, per iteration
    online: OnlineSettings = field(default_factory=OnlineSettings)  # stage 4, the loop
    eval: EvalSettings = field(default_factory=EvalSettings)  # stage 5
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # devices, precision, seed

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
    """``cls`` from the keys ``data`` gives; every key it leaves out keeps the field's default."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in hints:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key (valid keys: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in the preset tree; the key is checked against the schema, not the file,
    so a knob the preset leaves at its default can be overridden too."""
    parts = key.split(".")
    cls: Any = Config
    node = tree
    for i, part in enumerate(parts[:-1]):
        section = ".".join(parts[: i + 1])
        tp = typing.get_type_hints(cls).get(part)
        if tp is None or not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{key}: unknown key ({section} is not a section)")
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{section}: expected a mapping of {tp.__name__} fields, got {node[part]!r}")
        cls, node = tp, node[part]
    if parts[-1] not in typing.get_type_hints(cls):
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
    """Load a preset (only the keys it changes; the rest are the paper defaults), apply
    dotted-key overrides, type-check and validate it."""
    path = preset_path(preset)
    with open(path) as fh:
        tree = yaml.safe_load(fh)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"preset: {path} does not hold a mapping")
    tree.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree)
    validate(cfg)
    return cfg


# ------------------------------------------------------------- diff from the paper


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def diff_from_paper(cfg: Config) -> list[tuple[str, Any, Any]]:
    """Every knob of ``cfg`` that differs from the paper default, as ``(dotted key, paper, cfg)``.

    ``name`` and ``description`` are left out. Usage::

        from rlhf_utils.config import diff_from_paper, load_config
        for key, paper, ours in diff_from_paper(load_config("tiny")):
            print(f"{key}: {paper} -> {ours}")     # e.g. sft.learning_rate: 2e-05 -> 0.002

    On the command line: ``rlhf-workflow config --preset tiny --diff``.
    """
    paper, ours = _flatten(Config().to_dict()), _flatten(cfg.to_dict())
    return [
        (key, paper[key], value)
        for key, value in ours.items()
        if key not in ("name", "description") and value != paper[key]
    ]


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:(?P<rest>.*)$")


def _line_comment(rest: str) -> str:
    """The ``# comment`` after a YAML value (a ``#`` inside quotes or not after a space is no comment)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1 :].strip()
    return ""


def preset_comments(preset: str | Path) -> dict[str, str]:
    """The comment on each key's line of a preset file, by dotted key (``sft.learning_rate``).

    A key without a comment of its own takes its enclosing block's (``sft:  # CPU-sized``), so
    a block commented once explains every key in it. Full-line comments are ignored. This reads
    the block-style YAML the presets are written in; other layouts simply yield fewer comments.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str, str]] = []  # (indent, dotted key, comment) of the enclosing blocks
    for line in preset_path(preset).read_text().splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = f"{stack[-1][1]}.{match['key']}" if stack else match["key"]
        comment = _line_comment(match["rest"]) or (stack[-1][2] if stack else "")
        if comment:
            comments[dotted] = comment
        stack.append((indent, dotted, comment))
    return comments


def format_value(value: Any) -> str:
    """A config value as it would be written in a preset (``true``, ``[q_proj, v_proj]``, ``2e-05``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


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
    _require(bool(w.offline_writers), "world.offline_writers", "must name at least one writer", w.offline_writers)
    _require(len(set(w.offline_writers)) == len(w.offline_writers), "world.offline_writers", "names a writer twice",
             w.offline_writers)

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
    from .data import is_toy_world  # the data layer imports this module

    if is_toy_world(cfg):
        from .world import ToyWorld

        known = ToyWorld.from_recipe(cfg.data.recipe).writers
        unknown = [n for n in w.offline_writers if n not in known]
        _require(not unknown, "world.offline_writers", f"names no writer of the recipe (it has: {', '.join(known)})", unknown)

    _batching(cfg.sft, "sft")
    _batching(cfg.reward_model, "reward_model")
    _batching(cfg.preference_model, "preference_model")
    _require(cfg.preference_model.pair_orders in ("random", "both"), "preference_model.pair_orders",
             "must be random or both", cfg.preference_model.pair_orders)
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
    _positive(o, "online", "temperature", "max_new_tokens", "tensor_parallel_size", "generation_batch_size", "score_batch_size")
    _require(0 < o.top_p <= 1, "online.top_p", "must be in (0, 1]", o.top_p)
    _require(0 < o.vllm_gpu_memory_utilization <= 1, "online.vllm_gpu_memory_utilization", "must be in (0, 1]",
             o.vllm_gpu_memory_utilization)
    _non_negative(o, "online", "length_penalty", "margin", "prompts_per_iteration", "data_parallel_size")
    _require(
        not (o.accumulate and o.reference == "previous"),
        "online.accumulate",
        "cannot be combined with online.reference=previous (old pairs were sampled from other policies)",
        o.accumulate,
    )

    e = cfg.eval
    _positive(e, "eval", "temperature", "max_new_tokens", "samples_per_prompt", "bootstrap_samples")
    _require(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]", e.top_p)
    _non_negative(cfg.runtime, "runtime", "seed", "num_threads", "launch_processes")
    accelerate_config_path(cfg.runtime.accelerate_config)
