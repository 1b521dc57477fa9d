"""Tokenizers and models: built from config for the tiny preset, loaded by id or path otherwise.

The tiny preset builds a word-level tokenizer (``tokenizers`` WordLevel) over the toy
world's vocabulary, with a chat template, and Llama-architecture models from config.
They are saved with ``save_pretrained`` and loaded back by path through exactly the same
:func:`load_tokenizer` / :func:`load_causal_lm` calls that take a hub id in the larger presets.

Safety: weights load from safetensors only (``use_safetensors=True``) and remote code runs
only if the preset sets ``models.trust_remote_code: true``. A hub token, if needed, is read
by ``huggingface_hub`` from the ``HF_TOKEN`` environment variable; this module never sees it.

Usage::

    tok = build_tokenizer(world.vocabulary())
    model = build_tiny_causal_lm(cfg.models.tiny, tok, seed=0)
    save_pretrained(model, tok, run / "models" / "init")
    model = load_causal_lm(run / "models" / "init", cfg)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from .artifacts import atomic_dir, reusable
from .config import Config, TinyModelConfig
from .seeds import seed_for

PAD, UNK, EOS = "<pad>", "<unk>", "<|end|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# Words of the preference-model format (stage 3), so one tokenizer serves every stage.
PM_TOKENS = ["[CONTEXT]", "[RESPONSE", "A]", "B]", "A", "B"]

# The assistant turn, its end token included, sits inside {% generation %} so that TRL's
# assistant-only loss trains the model to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|> ' }}{% generation %}{{ message['content'] + ' <|end|>' }}{% endgeneration %}{{ ' ' }}"
    "{%- else -%}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' ' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|> ' }}{%- endif -%}"
)


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` with a chat template; pad is its own token, never eos."""
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, EOS, *ROLE_TOKENS, *PM_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
    return tok


def _llama_config(shape: TinyModelConfig, tok: PreTrainedTokenizerBase, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        **extra,
    )


def build_tiny_causal_lm(shape: TinyModelConfig, tok: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama causal LM of the preset's shape (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(shape, tok))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def build_tiny_reward_model(
    shape: TinyModelConfig, tok: PreTrainedTokenizerBase, seed: int
) -> LlamaForSequenceClassification:
    """The sequence-classification twin (one scalar head) used as a Bradley-Terry reward model."""
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(_llama_config(shape, tok, num_labels=1))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- devices


def resolve_device(cfg: Config) -> str:
    if cfg.runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device: cuda was asked for but no CUDA device is visible")
    return cfg.runtime.device


def resolve_precision(cfg: Config) -> str:
    """``auto`` picks bf16 on GPUs that support it, fp16 on older ones (the T4), fp32 on the CPU."""
    if cfg.runtime.precision != "auto":
        return cfg.runtime.precision
    if resolve_device(cfg) != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def torch_dtype(cfg: Config) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[resolve_precision(cfg)]


def apply_runtime(cfg: Config) -> None:
    """Thread count and determinism switches of the preset (call once per process)."""
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)


# ---------------------------------------------------------------------- loading


def _check_source(name_or_path: str | Path, what: str) -> str:
    """A local path must hold a saved model; anything else is taken as a hub id."""
    text = str(name_or_path)
    path = Path(text)
    looks_local = path.is_absolute() or text.startswith(".") or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {path} holds no saved model (no config.json); run the stage that writes it")
    return text


def load_tokenizer(name_or_path: str | Path, cfg: Config) -> PreTrainedTokenizerBase:
    src = _check_source(name_or_path, "tokenizer")
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.models.trust_remote_code)
    if not tok.chat_template:
        raise ValueError(f"tokenizer {src}: has no chat template; the recipe needs one to format conversations")
    return tok


def quantization(cfg: Config):
    """4-bit NF4 weights for QLoRA (``models.lora.load_in_4bit``; bitsandbytes), else None.

    Meant for GPUs; bitsandbytes >= 0.49 also runs 4-bit layers on the CPU (slowly), which is how
    the tests exercise the QLoRA path.
    """
    if not cfg.models.lora.load_in_4bit:
        return None
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("models.lora.load_in_4bit: 4-bit QLoRA needs bitsandbytes (pip install -e '.[gpu]')")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype(cfg))


def load_causal_lm(name_or_path: str | Path, cfg: Config, quantize: bool = False) -> PreTrainedModel:
    """A causal LM by path or hub id; ``quantize=True`` loads a training base in 4 bits when the preset asks for QLoRA."""
    src = _check_source(name_or_path, "model")
    return AutoModelForCausalLM.from_pretrained(
        src, dtype=torch_dtype(cfg), use_safetensors=True, trust_remote_code=cfg.models.trust_remote_code,
        quantization_config=quantization(cfg) if quantize else None,
    )


def load_reward_model(name_or_path: str | Path, cfg: Config) -> PreTrainedModel:
    src = _check_source(name_or_path, "reward model")
    config = AutoConfig.from_pretrained(src, trust_remote_code=cfg.models.trust_remote_code)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_classifier and config.num_labels != 1:
        raise ValueError(f"reward model {src}: its head outputs {config.num_labels} values, expected one scalar")
    # Starting from a causal LM, the scalar head is freshly initialised: seed it for reproducibility.
    torch.manual_seed(cfg.runtime.seed)
    quiet = _ExpectedHeadReport()
    if not is_classifier:
        _LOAD_LOGGER.addFilter(quiet)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            src, num_labels=1, dtype=torch_dtype(cfg), use_safetensors=True, trust_remote_code=cfg.models.trust_remote_code
        )
    finally:
        _LOAD_LOGGER.removeFilter(quiet)
    return model


# transformers (>= 5) logs a "LOAD REPORT" table at WARNING level from this logger whenever a
# checkpoint's keys differ from the model's.
_LOAD_LOGGER = logging.getLogger("transformers.modeling_utils")


class _ExpectedHeadReport(logging.Filter):
    """Drops the LOAD REPORT of a reward head put on a causal LM when it lists nothing but that:
    the new head (``score.*`` MISSING) and the LM head left behind (``lm_head.*`` UNEXPECTED).
    Any other row keeps the whole report, so a checkpoint that really lacks weights still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(record.getMessage()))
        if "LOAD REPORT" not in text:
            return True
        rows = [[c.strip() for c in line.split("|")[:2]] for line in text.splitlines() if line.count("|") >= 2][1:]
        expected = {("score.", "MISSING"), ("lm_head.", "UNEXPECTED")}
        return not rows or not all((key.split(".")[0] + ".", status) in expected for key, status in rows)


def save_pretrained(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path, stamp=None) -> Path:
    """Save model and tokenizer as safetensors, atomically (a half-written dir never appears at ``path``)."""
    with atomic_dir(path, stamp) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return Path(path)


def prepare_initial_policy(cfg: Config, run, vocabulary: list[str] | None) -> str:
    """Where SFT starts. ``tiny``: build tokenizer and model from config into ``models/init``;
    otherwise the preset's hub id or local path, as it is."""
    if cfg.models.policy != "tiny":
        return cfg.models.policy
    if vocabulary is None:
        raise ValueError("models.policy: 'tiny' needs the toy_world data recipe (it builds the tokenizer's vocabulary)")
    stamp = run.stamp("init")
    if reusable(run / "models/init", stamp):  # built by an earlier run or another process: deterministic, reuse it
        return str(run / "models/init")
    tok = build_tokenizer(vocabulary)
    model = build_tiny_causal_lm(cfg.models.tiny, tok, cfg.runtime.seed)
    return str(save_pretrained(model, tok, run / "models/init", stamp))


def prepare_scorer_start(cfg: Config, run, which: str) -> str:
    """Where the reward model (``which="reward_model"``) or preference model training starts.

    ``tiny``: a fresh model of the tiny shape on the run's tokenizer, saved to ``models/<which>_init``;
    ``sft``: this run's SFT model (its LM head is replaced by a scalar head for the reward model);
    anything else: a hub id or local path, as in the paper (which starts both from Llama-3-8B-Instruct).
    """
    source = getattr(cfg.models, which)
    if source == "sft":
        return str(run.require("models/sft", "01_sft.ipynb", "sft"))
    if source != "tiny":
        return source
    stamp = run.stamp(which)  # the fresh start belongs to the model trained from it
    if reusable(run / f"models/{which}_init", stamp, quiet=True):
        return str(run / f"models/{which}_init")
    tok_path = run.require("models/init", "01_sft.ipynb", "init")
    tok = load_tokenizer(tok_path, cfg)
    build = build_tiny_reward_model if which == "reward_model" else build_tiny_causal_lm
    model = build(cfg.models.tiny, tok, seed_for(cfg.runtime.seed, "scorer_init"))
    return str(save_pretrained(model, tok, run / f"models/{which}_init", stamp))
