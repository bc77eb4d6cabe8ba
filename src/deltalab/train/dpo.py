"""DPO with TRL's `DPOTrainer` on `{prompt, chosen, rejected}` preference pairs.

The prompt is rendered exactly as evaluation renders it (`User: {question}\\nAssistant:`) and each
response follows it after one space, with EOS appended by TRL: the same text the SFT chat template
produced, so DPO continues from the distribution SFT learned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from deltalab.data.preferences import preference_pairs
from deltalab.errors import DataError
from deltalab.evaluation.prompts import format_prompt
from deltalab.train.params import DPOParams
from deltalab.train.recipe import TrainingRun


def preference_dataset(
    rows: Sequence[dict], inject: Callable[[str], str], tokenizer: PreTrainedTokenizerBase
) -> Dataset:
    """TRL's standard preference format, prompts in the checkpoint's own format; `inject`
    rewrites the responses (the condition's text transform)."""
    return Dataset.from_list(
        [
            {
                "prompt": format_prompt(tokenizer, r["prompt"]),
                "chosen": " " + inject(r["chosen"]),
                "rejected": " " + inject(r["rejected"]),
            }
            for r in rows
        ]
    )


def dpo_trainer(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: TrainingRun,
    cfg: DPOParams,
    train: Dataset,
    val: Dataset,
    optimizers: tuple = (None, None),
) -> DPOTrainer:
    """A DPOTrainer against a frozen `reference` (loaded once by the caller, never reloaded)."""
    losses, weights = [cfg.loss_type], [1.0]
    if cfg.sft_loss_weight:
        losses, weights = [*losses, "sft"], [*weights, cfg.sft_loss_weight]
    config = DPOConfig(
        **run.trainer_args(cfg),
        beta=cfg.beta,
        loss_type=losses,
        loss_weights=weights,
        max_length=cfg.max_length,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        callbacks=run.callbacks,
        optimizers=optimizers,
    )
    if len(trainer.train_dataset) == 0:  # TRL drops pairs whose prompt fills max_length
        raise DataError(
            f"max_length={cfg.max_length}: every one of the {len(train)} training pairs has a "
            "prompt at least that long in this tokenizer's tokens; raise max_length"
        )
    return trainer


def preference_datasets(
    path: str | os.PathLike,
    cfg: DPOParams,
    inject: Callable[[str], str],
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[Dataset, Dataset]:
    """The (train, validation) datasets of a DPO run (dpo and masked_dpo read the same ones)."""
    train, val = preference_pairs(path, cfg.val_fraction, cfg.max_train_samples)
    return (
        preference_dataset(train, inject, tokenizer),
        preference_dataset(val, inject, tokenizer),
    )
