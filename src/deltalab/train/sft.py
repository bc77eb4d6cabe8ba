"""Supervised fine-tuning on chat data with TRL's `SFTTrainer`.

Loss is on assistant tokens only, and the chat template puts EOS inside the assistant's
`{% generation %}` block, so EOS is a label and the model learns to stop.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from deltalab.config import RuntimeParams, SFTParams
from deltalab.tokens import inject_mul_tokens
from deltalab.train.common import final_eval_loss, trainer_kwargs


def gsm8k_to_messages(rows: Sequence[dict]) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": r["answer"]},
            ]
        }
        for r in rows
    ]


def with_replay(
    rows: Sequence[dict], replay: Sequence[dict], fraction: float, seed: int
) -> list[dict]:
    """`rows` plus a seeded sample of `replay` rows, `fraction` × len(rows) of them."""
    n = min(len(replay), round(fraction * len(rows)))
    return [*rows, *random.Random(seed).sample(list(replay), n)]


def inject_assistant_turns(rows: Sequence[dict]) -> list[dict]:
    """The mul_tokens condition: rewrite only what the model must produce (assistant turns)."""
    return [
        {
            "messages": [
                m | {"content": inject_mul_tokens(m["content"])} if m["role"] == "assistant" else m
                for m in r["messages"]
            ]
        }
        for r in rows
    ]


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    params: SFTParams,
    runtime: RuntimeParams,
    seed: int,
    callbacks: list,
) -> dict[str, float]:
    """Train on `{"messages": [...]}` rows; returns final train and validation losses."""
    train = Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
    val = Dataset.from_list([{"messages": r["messages"]} for r in val_rows])
    # Scratch for the trainer, which creates its output_dir at once; the caller saves
    # the final model atomically, so no partial checkpoint ever appears at a stage output.
    with tempfile.TemporaryDirectory(prefix="deltalab-trainer-") as scratch:
        config = SFTConfig(
            **trainer_kwargs(params, runtime, seed, scratch),
            max_length=params.max_length,
            assistant_only_loss=True,
            packing=False,
            dataset_num_proc=None,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=train,
            eval_dataset=val,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        result = trainer.train()
        eval_loss = final_eval_loss(trainer)
        return {
            "train_loss": float(result.training_loss),
            "eval_loss": eval_loss,
        }
