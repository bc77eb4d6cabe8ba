"""Supervised fine-tuning on chat data with TRL's `SFTTrainer`.

Loss is on assistant tokens only, EOS included, so the model learns to stop. With our chat
template (and every template with `{% generation %}` blocks) TRL masks by those blocks. A
checkpoint's own template without them (Tulu's, Qwen's ChatML, Gemma's turns) trains as
prompt/completion instead: the conversation up to its last assistant turn is the prompt, that
turn, as the template renders it (end-of-turn and EOS included), the completion. A tokenizer with
no template at all (the original domain-token GPT-2 checkpoints) gets ours, so training and
evaluation prompt it the same way (`User: ...\nAssistant:`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from deltalab.tokenizer import CHAT_TEMPLATE
from deltalab.tokens import inject_mul_tokens
from deltalab.train.params import SFTParams
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


def rewrite_assistant_turns(
    rows: Sequence[dict], rewrite: Callable[[str], str] = inject_mul_tokens
) -> list[dict]:
    """A condition's text transform applied to what the model must produce (assistant turns)."""
    return [
        {
            "messages": [
                m | {"content": rewrite(m["content"])} if m["role"] == "assistant" else m
                for m in r["messages"]
            ]
        }
        for r in rows
    ]


class TokenMeanSFTTrainer(SFTTrainer):
    """SFTTrainer with the same loss, computed where it is defined: the mean cross-entropy of the
    next token over label positions (assistant tokens, EOS included; the sum over the batch divided
    by their count), with the LM head applied to those positions only. TRL's fused head runs it
    over every position, prompt and padding included, and also computes entropy and token accuracy
    at every step for its logs, which nothing here reads; on a CPU that was a third of each step
    (`bench/train_throughput.py`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        body = {k: v for k, v in inputs.items() if k != "labels"}
        # Through the (possibly wrapped) model, so DDP sees the forward; one position of logits.
        outputs = model(**body, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != -100
        hidden = outputs.hidden_states[-1][:, :-1][keep]  # the final (normed) hidden states
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        logits = head(hidden).float()
        count = keep.sum() if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(logits, targets[keep], reduction="sum") / count
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # `count` is every rank's tokens and DDP averages gradients over ranks: scale back,
            # as Trainer.compute_loss does, so the gradient is the global token mean's
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


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
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    masked_by_template = "{% generation %}" in tokenizer.chat_template
    rows = _as_messages if masked_by_template else _as_prompt_completion
    config = SFTConfig(
        **run.trainer_args(cfg),
        max_length=cfg.max_length,
        assistant_only_loss=masked_by_template,
        completion_only_loss=None if masked_by_template else True,
        packing=False,
        dataset_num_proc=None,
    )
    return TokenMeanSFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows(train_rows)),
        eval_dataset=Dataset.from_list(rows(val_rows)),
        processing_class=tokenizer,
        callbacks=run.callbacks,
        optimizers=optimizers,
    )


def _as_messages(rows: Sequence[dict]) -> list[dict]:
    return [{"messages": r["messages"]} for r in rows]


def _as_prompt_completion(rows: Sequence[dict]) -> list[dict]:
    """Conversations split before their last assistant turn (rows without one are dropped)."""
    out = []
    for r in rows:
        messages = r["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last:
            out.append({"prompt": messages[:last], "completion": [messages[last]]})
    return out
