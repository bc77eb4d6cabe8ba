"""Trainer arguments shared by every recipe, from one `TrainParams` section."""

from __future__ import annotations

from typing import Any

import torch

from deltalab.config import RuntimeParams, TrainParams


def trainer_kwargs(
    params: TrainParams, runtime: RuntimeParams, seed: int, output_dir: str
) -> dict[str, Any]:
    """Keyword arguments for `TrainingArguments` and TRL configs (they share these fields)."""
    use_cpu = runtime.device == "cpu" or not torch.cuda.is_available()
    return {
        "output_dir": output_dir,
        "max_steps": params.max_steps,
        "per_device_train_batch_size": params.batch_size,
        "per_device_eval_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.gradient_accumulation_steps,
        "learning_rate": params.learning_rate,
        "lr_scheduler_type": params.lr_scheduler,
        "warmup_steps": params.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        "weight_decay": params.weight_decay,
        "max_grad_norm": params.max_grad_norm,
        "eval_strategy": "steps",
        "eval_steps": params.eval_steps,
        "logging_steps": params.logging_steps,
        "logging_first_step": True,
        "save_strategy": "no",  # the recipe saves the final model atomically itself
        "report_to": "none",
        "bf16": runtime.bf16 and not use_cpu,
        "use_cpu": use_cpu,
        "activation_checkpointing": False,
        "seed": seed,
        "data_seed": seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
        "optim": "adamw_torch",
    }


def final_eval_loss(trainer) -> float:
    """Validation loss of the final weights: the last logged eval when it ran at the final step
    (eval_steps divides max_steps), else one more evaluation."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") == step:
                return float(entry["eval_loss"])
            break
    return float(trainer.evaluate()["eval_loss"])
