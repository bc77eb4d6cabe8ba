"""Prompt perplexity: how surprised a model is by the formatted questions themselves (the merge
search's label-free fluency objective)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deltalab.errors import DataError
from deltalab.evaluation.prompts import format_prompt


def mean_perplexity(nll: Sequence[float]) -> float:
    """exp of the mean over questions of their mean token NLL (NaN when that is not finite)."""
    mean = sum(nll) / len(nll)
    return math.exp(mean) if math.isfinite(mean) else float("nan")


def prompt_perplexity(model, tokenizer, questions: Sequence[str], batch_size: int = 64) -> float:
    """exp(mean over questions of the mean NLL of each formatted question's tokens after the
    first), right-padded batches."""
    encoded = tokenizer([format_prompt(tokenizer, q) for q in questions], add_special_tokens=False)[
        "input_ids"
    ]
    if any(len(ids) < 2 for ids in encoded):
        raise DataError("a query encodes to fewer than 2 tokens: no perplexity")
    device = next(model.parameters()).device
    nll: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(map(len, batch))
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            token_nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), ids[:, 1:], reduction="none"
            )
            weights = mask[:, 1:].float()
            nll += (token_nll * weights).sum(1).div(weights.sum(1)).tolist()
    return mean_perplexity(nll)
