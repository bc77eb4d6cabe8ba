"""Causal-LM pretraining from scratch on the corpus with `transformers.Trainer`."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from deltalab.config import PretrainParams, RuntimeParams
from deltalab.train.common import final_eval_loss, trainer_kwargs


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


def pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_texts: Sequence[str],
    val_texts: Sequence[str],
    params: PretrainParams,
    runtime: RuntimeParams,
    seed: int,
    callbacks: list,
) -> dict[str, float]:
    block = min(params.max_length, model.config.n_positions)
    train = pack_documents(train_texts, tokenizer, block)
    val = pack_documents(val_texts, tokenizer, block)
    # Scratch for the trainer, which creates its output_dir at once; the caller saves
    # the final model atomically, so no partial checkpoint ever appears at a stage output.
    with tempfile.TemporaryDirectory(prefix="deltalab-trainer-") as scratch:
        args = TrainingArguments(**trainer_kwargs(params, runtime, seed, scratch))
        trainer = Trainer(
            model=model, args=args, train_dataset=train, eval_dataset=val, callbacks=callbacks
        )
        result = trainer.train()
        eval_loss = final_eval_loss(trainer)
        return {
            "train_loss": float(result.training_loss),
            "eval_loss": eval_loss,
            "train_blocks": len(train),
            "tokens_per_block": block,
        }
