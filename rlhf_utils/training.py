"""Training stages through TRL's trainers, configured from the preset.

Each ``train_*`` function builds the TRL config from the preset's section, trains, and saves
the result (safetensors, with its tokenizer) atomically to ``output_dir``. It returns the
trainer's log history, so a notebook can plot the loss curve.

Usage::

    history = train_sft(cfg, "runs/tiny/models/init", splits["sft"], "runs/tiny/models/sft")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datasets import Dataset

from .artifacts import atomic_dir
from .config import Config
from .models import load_causal_lm, load_tokenizer, resolve_device, resolve_precision

try:  # accelerate's view of the process group; 1 outside `accelerate launch`
    from accelerate import PartialState

    def _world_size() -> int:
        return PartialState().num_processes

except ImportError:  # pragma: no cover
    def _world_size() -> int:
        return 1


def common_args(cfg: Config, settings: Any, n_rows: int, output_dir: str | Path) -> dict[str, Any]:
    """TrainingArguments shared by every stage: batch arithmetic, schedule, precision, seeds.

    The preset gives a *global* batch; gradient accumulation makes it up from the
    per-device batch on however many processes run, so a 1-GPU and an 8-GPU run follow the
    same optimisation. transformers 5 has no ``warmup_ratio``: warm-up steps are computed.
    """
    procs = _world_size()
    per_step = settings.per_device_batch_size * procs
    accum = max(1, settings.global_batch_size // per_step)
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


def _save(trainer: Any, output_dir: str | Path) -> None:
    """Save the trained model (LoRA merged into the base) and tokenizer, atomically."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        trainer.processing_class.save_pretrained(tmp)


def train_sft(cfg: Config, model_path: str | Path, dataset: Dataset, output_dir: str | Path) -> list[dict[str, Any]]:
    """Supervised fine-tuning with TRL's SFTTrainer: chat template, loss on assistant tokens only."""
    from trl import SFTConfig, SFTTrainer

    s = cfg.sft
    args = SFTConfig(
        **common_args(cfg, s, len(dataset), Path(output_dir).with_suffix(".trainer")),
        weight_decay=s.weight_decay,
        max_length=s.max_length,
        packing=s.packing,
        assistant_only_loss=s.assistant_only_loss,
    )
    trainer = SFTTrainer(
        model=load_causal_lm(model_path, cfg),
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(model_path, cfg),
        peft_config=lora_config(cfg),
    )
    trainer.train()
    _save(trainer, output_dir)
    return trainer.state.log_history
