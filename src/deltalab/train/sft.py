"""Supervised fine-tuning on chat data with TRL's `SFTTrainer`.

Loss is on assistant tokens only, and the chat template puts EOS inside the assistant's
`{% generation %}` block, so EOS is a label and the model learns to stop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from deltalab.config import SFTParams
from deltalab.tokens import inject_mul_tokens
from deltalab.train.recipe import TrainingRun


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


def sft_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: TrainingRun,
    cfg: SFTParams,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    optimizers: tuple = (None, None),
) -> SFTTrainer:
    """TRL's SFTTrainer on `{"messages": [...]}` rows, loss on assistant tokens (EOS included)."""
    config = SFTConfig(
        **run.trainer_args(cfg),
        max_length=cfg.max_length,
        assistant_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in train_rows]),
        eval_dataset=Dataset.from_list([{"messages": r["messages"]} for r in val_rows]),
        processing_class=tokenizer,
        callbacks=run.callbacks,
        optimizers=optimizers,
    )
