"""The two label-free objectives of one search trial, computed in process on the live model.

consistency (maximize): mean over queries of the most common answer's share of `votes` samples;
prompt perplexity (minimize): exp of the mean over queries of each chat-formatted question's mean
token NLL. The weights come from `LiveMerge.apply`: no checkpoint is written per trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from deltalab.errors import CheckpointError, DataError
from deltalab.evaluation.prompts import format_prompt
from deltalab.merging.live import LiveMerge
from deltalab.search.params import SearchParams
from deltalab.search.queries import consistency
from deltalab.search.voting import vote


@dataclass
class TrialResult:
    consistency: float
    perplexity: float
    seconds: dict[str, float] = field(default_factory=dict)  # apply, generate, perplexity


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
    mean = sum(nll) / len(nll)
    return math.exp(mean) if math.isfinite(mean) else float("nan")


class SearchObjective:
    """(scale_sft, scale_rlvr) → TrialResult on the queries, reusing one model in memory."""

    def __init__(
        self, model, tokenizer, live: LiveMerge, questions: Sequence[str], cfg: SearchParams
    ) -> None:
        if not questions:
            raise DataError("the search has no queries")
        self.model, self.tokenizer, self.live = model, tokenizer, live
        self.questions, self.cfg = list(questions), cfg

    def __call__(self, scales: Sequence[float]) -> TrialResult:
        t0 = time.perf_counter()
        self.live.apply(scales)
        t1 = time.perf_counter()
        try:
            votes = vote(self.model, self.tokenizer, self.questions, self.cfg, desc="trial")
        except CheckpointError:  # NaN/inf logits at extreme scales: no answer distribution
            return TrialResult(float("nan"), float("nan"), {"apply": t1 - t0})
        t2 = time.perf_counter()
        score = sum(consistency(v)[0] for v in votes) / len(votes)
        ppl = prompt_perplexity(self.model, self.tokenizer, self.questions, self.cfg.ppl_batch_size)
        t3 = time.perf_counter()
        return TrialResult(
            score, ppl, {"apply": t1 - t0, "generate": t2 - t1, "perplexity": t3 - t2}
        )
