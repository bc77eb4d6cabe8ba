"""The one training recipe every training stage follows (pretrain, SFT, DPO, GRPO).

A stage opens a `TrainingRun`, loads its parent checkpoint through it, builds the trainer it needs
(SFTTrainer, DPOTrainer, GRPOTrainer, with its own optimizer if it wants one) from
`run.trainer_args(cfg)` and `run.callbacks`, calls `run.train(trainer)`, may read the trainer's
state afterwards (optimizer moments, log history), and ends with `run.save(model, tokenizer)`:

    with TrainingRun(out, metrics_dir, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(parent)
        trainer = SFTTrainer(model=model, args=SFTConfig(**run.trainer_args(cfg), ...), ...)
        run.train(trainer)
        run.save(model, tokenizer)

Trainers write only to a scratch directory and dvclive to a hidden sibling of the metrics directory;
both stage outputs appear (atomically) at `save`, so an interrupted or failed stage never leaves a
partial checkpoint or half a training log behind.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from deltalab.atomic import atomic_dir
from deltalab.errors import DataError
from deltalab.models import configure_torch, load_causal_lm, save_checkpoint
from deltalab.schema.runtime import RuntimeParams
from deltalab.train.logging import dvclive_callback, open_live
from deltalab.train.params import TrainParams


class TrainingRun:
    """Logging, scratch space and the atomic save of one training stage."""

    def __init__(
        self,
        out: str | os.PathLike,
        metrics_dir: str | os.PathLike,
        runtime: RuntimeParams,
        seed: int,
    ) -> None:
        self.out, self.runtime, self.seed = Path(out), runtime, seed
        self.metrics_dir = Path(metrics_dir)
        configure_torch(runtime)
        set_seed(seed)
        # A fixed name, so a run killed mid-way leaves at most one stale log that the next removes.
        self._live_dir = self.metrics_dir.with_name(f".{self.metrics_dir.name}.tmp-live")
        shutil.rmtree(self._live_dir, ignore_errors=True)
        self.live = open_live(self._live_dir)
        self._scratch = tempfile.TemporaryDirectory(prefix="deltalab-trainer-")
        self.callbacks = [dvclive_callback(self.live)]

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._scratch.cleanup()
        shutil.rmtree(self._live_dir, ignore_errors=True)  # left only when `save` never ran

    @property
    def summary(self) -> dict[str, Any]:
        """Final numbers of the run (dvclive's metrics.json, Git-tracked)."""
        return self.live.summary

    def load_parent(
        self, parent: str | os.PathLike
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The checkpoint this stage continues from (local only, strict, see `load_causal_lm`)."""
        return load_causal_lm(parent, trust_remote_code=self.runtime.trust_remote_code)

    def load_frozen(self, parent: str | os.PathLike) -> PreTrainedModel:
        """A second, frozen copy of a checkpoint: the reference model of DPO / GRPO's KL term."""
        model, _ = self.load_parent(parent)
        model.requires_grad_(False)
        return model.eval()

    def trainer_args(self, cfg: TrainParams) -> dict[str, Any]:
        """Keyword arguments for `TrainingArguments` and every TRL config (they share these)."""
        use_cpu = self.runtime.device == "cpu" or not torch.cuda.is_available()
        return {
            "output_dir": self._scratch.name,
            "max_steps": cfg.max_steps,
            "per_device_train_batch_size": cfg.batch_size,
            "per_device_eval_batch_size": cfg.batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "learning_rate": cfg.learning_rate,
            "lr_scheduler_type": cfg.lr_scheduler,
            "warmup_steps": cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
            "weight_decay": cfg.weight_decay,
            "max_grad_norm": cfg.max_grad_norm,
            "eval_strategy": "no" if cfg.eval_steps is None else "steps",
            "eval_steps": cfg.eval_steps,
            "logging_steps": cfg.logging_steps,
            "logging_first_step": True,
            "save_strategy": "no",  # `save` writes the final model atomically
            "report_to": "none",
            "bf16": self.runtime.bf16 and not use_cpu,
            "use_cpu": use_cpu,
            "activation_checkpointing": False,
            "seed": self.seed,
            "data_seed": self.seed,
            "dataloader_num_workers": 0,
            "disable_tqdm": False,
            # one kernel for all parameters: the per-tensor loop cost ~15% of a tiny CPU step
            "optim": "adamw_torch_fused",
        }

    def train(self, trainer) -> dict[str, float]:
        """Train; record `final/train_loss` (and `final/eval_loss` with an eval set) in the
        summary; return the final evaluation's metrics (empty without an eval set)."""
        result = trainer.train()
        if not math.isfinite(result.training_loss):
            raise DataError(f"{self.out}: training loss is {result.training_loss} (diverged)")
        self.summary["final/train_loss"] = float(result.training_loss)
        final = final_eval_metrics(trainer) if trainer.eval_dataset is not None else {}
        if "eval_loss" in final:
            self.summary["final/eval_loss"] = final["eval_loss"]
        return final

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the checkpoint, then the training log with its summary, each atomically."""
        model.config.use_cache = True
        with atomic_dir(self.out) as tmp:
            save_checkpoint(model, tokenizer, tmp)
        self.live.make_summary()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        os.replace(self._live_dir, self.metrics_dir)


def final_eval_metrics(trainer) -> dict[str, float]:
    """Validation metrics of the final weights: the last logged evaluation when it ran at the final
    step (eval_steps divides max_steps), else one more evaluation."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") == step:
                return {k: float(v) for k, v in entry.items() if k.startswith("eval_")}
            break
    return {k: float(v) for k, v in trainer.evaluate().items() if k.startswith("eval_")}


def optimizer_state(trainer, model: PreTrainedModel, key: str) -> dict[str, torch.Tensor]:
    """One entry of the optimizer state (e.g. Adam's `exp_avg`) per trainable parameter, keyed
    by parameter name; a parameter the optimizer never stepped has no entry."""
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate
    state = {}
    for name, param in model.named_parameters():
        entry = optimizer.state.get(param, {})
        if key in entry:
            state[name] = entry[key].detach().to("cpu", torch.float32).contiguous()
    return state
