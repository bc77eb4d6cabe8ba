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

Under a launcher (`runtime.processes` > 1) every rank runs the same recipe on its share of each
global batch (the params' batch sizes stay global, so N processes train the model one process
would, up to the order of float sums); only rank 0 logs and writes, after every rank has reached
`save`.
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
from deltalab.errors import ConfigError, DataError
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
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = os.environ.get("RANK", "0") == "0"
        configure_torch(runtime)
        set_seed(seed)
        self._scratch = tempfile.TemporaryDirectory(prefix="deltalab-trainer-")
        # A fixed name, so a run killed mid-way leaves at most one stale log that the next removes;
        # other ranks log into their scratch space, never beside the stage's outputs.
        self._live_dir = (
            self.metrics_dir.with_name(f".{self.metrics_dir.name}.tmp-live")
            if self.is_main
            else Path(self._scratch.name) / "live"
        )
        shutil.rmtree(self._live_dir, ignore_errors=True)
        self.live = open_live(self._live_dir)
        self.callbacks = [dvclive_callback(self.live)]
        self._trainer = None

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._scratch.cleanup()
        if self.is_main:
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
        if cfg.batch_size % self.world_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is the global batch: it must divide among "
                f"runtime.processes={self.world_size} ranks"
            )
        # Rank r takes every N-th per-rank batch of one seeded order: step k trains on the same
        # examples as one process's batch k of `batch_size`.
        per_rank = cfg.batch_size // self.world_size
        return {
            "output_dir": self._scratch.name,
            "max_steps": cfg.max_steps,
            "per_device_train_batch_size": per_rank,
            "per_device_eval_batch_size": per_rank,
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
        self._trainer = trainer
        result = trainer.train()
        if not math.isfinite(result.training_loss):
            raise DataError(f"{self.out}: training loss is {result.training_loss} (diverged)")
        self.summary["final/train_loss"] = float(result.training_loss)
        final = final_eval_metrics(trainer) if trainer.eval_dataset is not None else {}
        if "eval_loss" in final:
            self.summary["final/eval_loss"] = final["eval_loss"]
        return final

    def save(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        """Write the checkpoint, then the training log with its summary, each atomically (rank
        0, once every rank got here; sharded weights are gathered first)."""
        model.config.use_cache = True
        state_dict = None
        if self.world_size > 1 and self._trainer is not None:
            accelerator = self._trainer.accelerator
            accelerator.wait_for_everyone()
            if accelerator.is_fsdp2 or getattr(accelerator.state, "fsdp_plugin", None):
                state_dict = accelerator.get_state_dict(self._trainer.model)  # every rank
        if not self.is_main:
            return
        with atomic_dir(self.out) as tmp:
            save_checkpoint(model, tokenizer, tmp, state_dict)
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
