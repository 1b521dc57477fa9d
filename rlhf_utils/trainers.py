"""Training stages through TRL's trainers, configured from the preset.

Each ``train_*`` function builds the TRL config from the preset's section, trains, and saves
the result (safetensors, with its tokenizer) atomically to ``output_dir``. It returns the
trainer's log history and wall time (:class:`TrainLog`); a finished checkpoint is reused, not retrained.

Usage::

    log = train_sft(cfg, "runs/tiny/models/init", splits["sft"], run / "models/sft", stamp=run.stamp("sft"))
    log.history[-1], log.seconds

``stamp`` (``rlhf_utils.fingerprints``) is the fingerprint the checkpoint is saved with; a
checkpoint found at ``output_dir`` is reused only when it was saved with the same one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback

from .artifacts import CRASH_ENV, atomic_dir, crash_point, is_complete, reusable
from .fingerprints import Stamp
from .config import Config
from .models import load_causal_lm, load_tokenizer, resolve_device, resolve_precision

try:  # accelerate's view of the process group; 1 outside `accelerate launch`
    from accelerate import PartialState

    def _world_size() -> int:
        return PartialState().num_processes

except ImportError:  # pragma: no cover
    def _world_size() -> int:
        return 1


def accumulation_steps(settings: Any, processes: int) -> int:
    """Gradient-accumulation steps that make up the preset's global batch on ``processes`` processes."""
    per_step = settings.per_device_batch_size * processes
    if settings.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {settings.global_batch_size} is not a multiple of per_device_batch_size "
            f"{settings.per_device_batch_size} x {processes} processes; change per_device_batch_size"
        )
    return settings.global_batch_size // per_step


def common_args(cfg: Config, settings: Any, n_rows: int, output_dir: str | Path) -> dict[str, Any]:
    """TrainingArguments shared by every stage: batch arithmetic, schedule, precision, seeds.

    The preset gives a *global* batch; gradient accumulation makes it up from the
    per-device batch on however many processes run, so a 1-GPU and an 8-GPU run follow the
    same optimisation. transformers 5 has no ``warmup_ratio``: warm-up steps are computed.
    """
    procs = _world_size()
    per_step = settings.per_device_batch_size * procs
    accum = accumulation_steps(settings, procs)
    steps = math.ceil(n_rows / (per_step * accum)) * settings.epochs
    precision = resolve_precision(cfg)
    return dict(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=int(settings.warmup_ratio * steps),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=accum,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=resolve_device(cfg) == "cpu",
        activation_checkpointing=cfg.runtime.gradient_checkpointing,
        seed=cfg.runtime.seed,
        data_seed=cfg.runtime.seed,
        logging_steps=max(1, int(steps) // 40),
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
        # Every trainable parameter takes part in each stage's loss; the default (True without
        # gradient checkpointing) costs DDP an extra graph traversal per step for nothing.
        ddp_find_unused_parameters=False,
    )


def lora_config(cfg: Config):
    """A PEFT LoraConfig when the preset switches LoRA on, else None."""
    if not cfg.models.lora.enabled:
        return None
    from peft import LoraConfig

    lo = cfg.models.lora
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules, task_type="CAUSAL_LM"
    )


TRAIN_LOG = "train_log.json"


@dataclass
class TrainLog:
    """What a training stage leaves: the trainer's log history and its wall time."""

    history: list[dict[str, Any]]
    seconds: float
    reused: bool = False  # True when a finished checkpoint was found and training skipped


def reuse(output_dir: str | Path, stamp: Stamp | None) -> TrainLog | None:
    """The log of a finished stage, whose checkpoint dir appeared atomically, still matches its
    digest and was trained with ``stamp``'s settings: the stage is skipped. A damaged checkpoint,
    or one trained with other settings, is removed and retrained (with a line saying why)."""
    if not (reusable(output_dir, stamp) if stamp is not None else is_complete(output_dir)):
        return None
    data = json.loads((Path(output_dir) / TRAIN_LOG).read_text())
    return TrainLog(data["history"], data["seconds"], reused=True)


class _CrashAtStep(TrainerCallback):
    """Resume tests: kill the process in the middle of training (see ``artifacts.crash_point``)."""

    def __init__(self, name: str):
        self.name = name

    def on_step_end(self, args, state, control, **kwargs):
        crash_point(f"train:{self.name}:step{state.global_step}")


def merge_lora(model: Any) -> Any:
    """LoRA merged into its base, as a plain full-precision model (a model without LoRA as it is).

    A 4-bit (QLoRA) base would keep its quantized layers through ``merge_and_unload`` and round the
    small update away, and the checkpoint would load back 4-bit. So its adapter is merged into the
    base reloaded in the compute dtype instead, the usual QLoRA recipe.
    """
    if not hasattr(model, "merge_and_unload"):
        return model
    base = model.get_base_model()
    quant = getattr(base.config, "quantization_config", None)
    if quant is None:
        return model.merge_and_unload()
    import copy
    import tempfile

    from peft import PeftModel

    config = copy.deepcopy(base.config)
    del config.quantization_config
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    dtype = quant.get("bnb_4bit_compute_dtype") or config.dtype
    with tempfile.TemporaryDirectory() as adapter:
        model.save_pretrained(adapter)
        full = type(base).from_pretrained(
            model.peft_config["default"].base_model_name_or_path, config=config, dtype=dtype, use_safetensors=True
        )
        full.resize_token_embeddings(base.get_input_embeddings().weight.shape[0])
        return PeftModel.from_pretrained(full, adapter).merge_and_unload()


def _fit(trainer: Any, output_dir: str | Path, stamp: Stamp | None) -> TrainLog:
    """Train, then save model (LoRA merged into the base), tokenizer and log in one atomic rename."""
    if os.environ.get(CRASH_ENV):
        trainer.add_callback(_CrashAtStep(Path(output_dir).name))
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model, state = merge_lora(model), None
    else:  # ZeRO-3 shards the parameters: gather them (a collective, so every process asks)
        state = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:  # one writer when several processes trained together
        with atomic_dir(output_dir, stamp) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            trainer.processing_class.save_pretrained(tmp)
            (tmp / TRAIN_LOG).write_text(json.dumps({"history": trainer.state.log_history, "seconds": seconds}))
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)  # nothing kept there (save_strategy="no")
    trainer.accelerator.wait_for_everyone()
    return TrainLog(trainer.state.log_history, seconds)


def train_sft(cfg: Config, model_path: str | Path, dataset: Dataset, output_dir: str | Path,
              stamp: Stamp | None = None) -> TrainLog:
    """Supervised fine-tuning with TRL's SFTTrainer: chat template, loss on assistant tokens only."""
    if done := reuse(output_dir, stamp):
        return done
    s = cfg.sft
    extra = dict(weight_decay=s.weight_decay, packing=s.packing, assistant_only_loss=s.assistant_only_loss)
    return _supervised(cfg, s, model_path, dataset, output_dir, stamp, **extra)


def _supervised(cfg: Config, s: Any, model_path: str | Path, dataset: Dataset, output_dir: str | Path,
                stamp: Stamp | None, **extra) -> TrainLog:
    """SFTTrainer on a conversational ``messages`` dataset (the SFT stage and the preference model)."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_args(cfg, s, len(dataset), Path(output_dir).with_suffix(".trainer")), max_length=s.max_length, **extra
    )
    trainer = SFTTrainer(
        model=load_causal_lm(model_path, cfg, quantize=True),
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(model_path, cfg),
        peft_config=lora_config(cfg),
    )
    return _fit(trainer, output_dir, stamp)


def train_reward_model(
    cfg: Config, base_path: str | Path, dataset: Dataset, output_dir: str | Path, stamp: Stamp | None = None
) -> TrainLog:
    """A Bradley-Terry reward model with TRL's RewardTrainer: loss -log sigmoid(r(x, y+) - r(x, y-)).

    A checkpoint without a pad token gets a dedicated one (never eos: see ``scoring.ensure_pad_token``).
    """
    if done := reuse(output_dir, stamp):
        return done
    from trl import RewardConfig, RewardTrainer

    from .models import load_reward_model
    from .scoring import ensure_pad_token

    s = cfg.reward_model
    model, tok = load_reward_model(base_path, cfg), load_tokenizer(base_path, cfg)
    if ensure_pad_token(model, tok):
        print(f"reward model: added a dedicated pad token {tok.pad_token!r} (pad = eos would make every score equal)")
    args = RewardConfig(
        **common_args(cfg, s, len(dataset), Path(output_dir).with_suffix(".trainer")),
        weight_decay=s.weight_decay,
        max_length=s.max_length,
        center_rewards_coefficient=s.center_rewards_coefficient or None,
    )
    peft = lora_config(cfg)
    if peft is not None:
        peft.task_type = "SEQ_CLS"
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft)
    return _fit(trainer, output_dir, stamp)


def preference_model_dataset(dataset: Dataset, seed: int, orders: str = "random") -> Dataset:
    """Preference pairs in the paper's PM format. ``orders``: ``random`` puts the preferred response at a
    random position (the paper), ``both`` writes each pair twice, once in each order."""
    import random

    from .data import prompt_text
    from .scoring import pm_conversation

    rng = random.Random(seed)
    rows = []
    for p, c, r in zip(dataset["prompt"], dataset["chosen"], dataset["rejected"]):
        context, chosen, rejected = prompt_text(p), c[-1]["content"], r[-1]["content"]
        firsts = (True, False) if orders == "both" else (rng.random() < 0.5,)
        rows += [pm_conversation(context, chosen, rejected, chosen_first=f) for f in firsts]
    return Dataset.from_dict({"messages": rows})


def train_preference_model(
    cfg: Config, base_path: str | Path, dataset: Dataset, output_dir: str | Path, stamp: Stamp | None = None
) -> TrainLog:
    """A pairwise preference model: a causal LM trained (TRL SFTTrainer, loss on the answer) to say A or B."""
    if done := reuse(output_dir, stamp):
        return done
    pm_data = preference_model_dataset(dataset, cfg.runtime.seed, cfg.preference_model.pair_orders)
    return _supervised(cfg, cfg.preference_model, base_path, pm_data, output_dir, stamp, assistant_only_loss=True)


def drop_long_prompts(dataset: Dataset, tok: Any, max_prompt_tokens: int, name: str) -> Dataset:
    """Drop rows whose rendered prompt exceeds ``max_prompt_tokens`` (TRL would truncate them silently)."""
    lengths = [
        len(tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        for p in dataset["prompt"]
    ]
    keep = [i for i, n in enumerate(lengths) if n <= max_prompt_tokens]
    if len(keep) < len(dataset):
        print(f"{name}: dropped {len(dataset) - len(keep)} rows with prompts longer than {max_prompt_tokens} tokens")
    return dataset.select(keep) if len(keep) < len(dataset) else dataset


def _shared_on_disk(dataset: Dataset, path: Path) -> Dataset:
    """Several processes: one on-disk copy they all load. TRL writes the tokenised pairs and the
    precomputed reference log-probs as cache files beside a dataset's own files (rank 0 computes,
    the others read); an in-memory dataset would put them in each process's private temp dir."""
    from datasets import load_from_disk

    state = PartialState()
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(path, ignore_errors=True)
            dataset.save_to_disk(str(path))
        return load_from_disk(str(path))


def train_dpo(
    cfg: Config,
    policy_path: str | Path,
    ref_path: str | Path,
    pairs: Dataset,
    output_dir: str | Path,
    max_steps: int | None = None,
    stamp: Stamp | None = None,
) -> TrainLog:
    """DPO with TRL's DPOTrainer from ``policy_path`` against the frozen reference ``ref_path``.

    Reference log-probs are precomputed once: within one call the pairs and the reference are
    fixed, so this is exact and saves a reference forward pass per step. ``max_steps`` fixes the
    optimizer budget (the offline baseline matches the online run's steps with it).
    """
    if done := reuse(output_dir, stamp):
        return done
    from trl import DPOConfig, DPOTrainer

    s = cfg.dpo
    tok = load_tokenizer(policy_path, cfg)
    # A copy of its own, so TRL's tokenising map writes no cache files into the run dir's pair artifacts.
    pairs = Dataset.from_dict(drop_long_prompts(pairs, tok, s.max_prompt_length, "dpo pairs").to_dict())
    if len(pairs) == 0:
        raise ValueError("dpo: no preference pairs to train on")
    scratch = Path(output_dir).with_suffix(".trainer")  # removed by _fit once the model is saved
    if _world_size() > 1:
        pairs = _shared_on_disk(pairs, scratch / "pairs")
    extra = {"max_steps": max_steps} if max_steps else {}
    args = DPOConfig(
        **(common_args(cfg, s, len(pairs), scratch) | extra),
        beta=s.beta,
        loss_type=[s.loss_type],
        label_smoothing=s.label_smoothing,
        max_length=s.max_length,
        precompute_ref_log_probs=True,
    )
    peft = lora_config(cfg)
    trainer = DPOTrainer(
        model=load_causal_lm(policy_path, cfg, quantize=True),
        # With LoRA and reference = starting policy, TRL switches the adapter off instead of a second copy.
        ref_model=None if peft and str(ref_path) == str(policy_path) else load_causal_lm(ref_path, cfg),
        args=args,
        train_dataset=pairs,
        processing_class=tok,
        peft_config=peft,
    )
    return _fit(trainer, output_dir, stamp)


PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def training_pairs(run: Any, t: int, current: Dataset) -> Dataset:
    """Iteration t's DPO data: its own pairs, or (``online.accumulate``) all pairs gathered so far."""
    from datasets import concatenate_datasets, load_from_disk

    if not run.cfg.online.accumulate or t == 1:
        return current.select_columns(PAIR_COLUMNS)
    older = [load_from_disk(str(run.iter_dir(s) / "pairs")).select_columns(PAIR_COLUMNS) for s in range(1, t)]
    return concatenate_datasets([*older, current.select_columns(PAIR_COLUMNS)])


def train_iteration(run: Any, t: int, pairs: Dataset) -> TrainLog:
    """Step 4 of online iteration ``t``: DPO from the policy of t-1 against the reference
    (``online.reference``) on this iteration's pairs (all pairs so far with ``online.accumulate``),
    saved as the policy of iteration t (``run.policy_path(t)``); launched over the GPUs when there
    are several. Usage::

        log = train_iteration(run, 1, pairs)
    """
    from .launch import launched

    return launched("dpo", run, run.policy_path(t), iteration=t) or train_dpo(
        run.cfg, run.policy_path(t - 1), run.reference_path(t), training_pairs(run, t, pairs), run.policy_path(t),
        stamp=run.stamp(f"policy:{t}"))
