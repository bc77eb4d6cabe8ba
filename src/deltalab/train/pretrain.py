"""Causal-LM pretraining from scratch on the corpus with `transformers.Trainer`."""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from deltalab.train.params import PretrainParams
from deltalab.train.recipe import TrainingRun


def pack_documents(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block: int) -> Dataset:
    """Concatenate documents separated by EOS and cut into full blocks (no padding, no waste)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // block
    if n == 0:
        raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {block}")
    blocks = [ids[i * block : (i + 1) * block] for i in range(n)]
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})


def pretrain_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: TrainingRun,
    cfg: PretrainParams,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
) -> Trainer:
    """A Trainer on packed blocks of `min(max_length, n_positions)` tokens."""
    block = min(cfg.max_length, model.config.n_positions)
    return Trainer(
        model=model,
        args=TrainingArguments(**run.trainer_args(cfg)),
        train_dataset=pack_documents(train_texts, tokenizer, block),
        eval_dataset=pack_documents(val_texts, tokenizer, block),
        callbacks=run.callbacks,
    )
