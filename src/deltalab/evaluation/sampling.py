"""Batched sampling (temperature, optional top-p) and teacher-forced confidence of responses.

Sampling runs the greedy decoder's loop (`generation._decode_batch`: left padding, KV cache,
finished rows leave the batch) with a different token choice. Each prompt is encoded once and its
KV cache copied `n` times (`expand_cache=True`, the default; `bench/sampling.py` measures it against
repeating the prompt `n` times in the batch).

Seeding: sample j of prompt i draws one uniform number per step from
`numpy.random.default_rng([seed, i, j])` and takes the token where that number falls in the
cumulative distribution (inverse CDF, vocabulary order; nucleus-sorted order with top-p). A
sample's tokens therefore depend only on the model, its prompt and (seed, i, j): not on the batch
size, on which prompts share its batch, or on the order of rows. (Padding a prompt to a different
width may change its logits in the last float bit; a sample changes only if its uniform falls within
that rounding of a CDF boundary.) Every model sees the same uniforms for (seed, i, j), so paired
comparisons of models use common random numbers.

`response_confidence` scores given responses (e.g. greedy ones) by one teacher-forced forward pass
per batch: mean log-probability of the response tokens (EOS included when generated) and mean
entropy of the model's next-token distribution at those positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from deltalab.errors import CheckpointError, DataError
from deltalab.evaluation.generation import (
    CacheCannotRepeat,
    Generation,
    _check_args,
    _context_length,
    _decode_batch,
    _encode,
    _eos_ids,
    _finish,
    _forward_accepts,
    _left_pad,
    _longest_first,
    _pad_id,
    _prepare,
)


def _check_sampling(n: int, temperature: float, top_p: float) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def row_uniforms(seed: int, prompt_index: int, sample_index: int, steps: int) -> np.ndarray:
    """The uniform numbers in [0, 1) that decide sample `sample_index` of prompt `prompt_index`."""
    return np.random.default_rng([seed, prompt_index, sample_index]).random(steps)


def sample_from_logits(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float = 1.0
) -> torch.Tensor:
    """One token per row of `logits` (rows x vocab) by inverse CDF at `uniforms` (one per row).

    Tokens outside the nucleus (top-p) and tokens of probability zero are never chosen. A row
    with a NaN or +inf logit, or with every logit -inf, is a CheckpointError (no distribution).
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        probs = probs.masked_fill(before >= top_p, 0.0)  # the most likely token always stays
    cdf = probs.double().cumsum(dim=-1)
    total = cdf[:, -1:]
    if not bool(torch.isfinite(total).all()) or not bool((total > 0).all()):
        raise CheckpointError(
            "the model produced NaN or infinite logits; cannot sample (broken checkpoint?)"
        )
    # strictly below the total, so the token found has positive probability
    target = torch.minimum(uniforms.double()[:, None] * total, torch.nextafter(total, total * 0))
    index = torch.searchsorted(cdf, target, right=True)
    if order is not None:
        index = order.gather(-1, index)
    return index.squeeze(-1)


class _Sampler:
    """The `pick` of `_decode_batch`: row r at step t uses uniforms[r, t]."""

    def __init__(
        self, uniforms: torch.Tensor, temperature: float, top_p: float, by_column: bool = True
    ) -> None:
        # one contiguous column per step: a step gathers its rows from one column, not through
        # a 2-D advanced index of a Python list (a tenth of a CPU decode step); `by_column`
        # False is the old way, the same numbers (the sampling bench's reference)
        self.uniforms, self.columns = uniforms, uniforms.t().contiguous()
        self.temperature, self.top_p, self.by_column = temperature, top_p, by_column
        self._rows: tuple[list[int], torch.Tensor] | None = None

    def __call__(self, logits: torch.Tensor, rows: list[int], step: int) -> torch.Tensor:
        if not self.by_column:
            u = self.uniforms[rows, step].to(logits.device)
            return sample_from_logits(logits, u, self.temperature, self.top_p)
        if self._rows is None or self._rows[0] is not rows:  # rows change only when one stops
            self._rows = (rows, torch.tensor(rows))
        u = self.columns[step].index_select(0, self._rows[1]).to(logits.device)
        return sample_from_logits(logits, u, self.temperature, self.top_p)


def _sample_batch(
    model,
    prompt_ids: list[list[int]],
    n: int,
    expand_cache: bool,
    pad_id: int,
    max_new_tokens: int,
    eos_ids: list[int],
    pick: _Sampler,
    preallocate: bool = True,
) -> list[list[int]]:
    """New tokens of rows `k * n + j` (sample j of prompt k), left-padded like greedy batches."""
    copies = 1 if expand_cache else n  # rows of each prompt in the input
    rows = [ids for ids in prompt_ids for _ in range(copies)]
    input_ids, attention_mask = _left_pad(rows, pad_id, model.device)
    return _decode_batch(
        model,
        input_ids,
        attention_mask,
        max_new_tokens,
        eos_ids,
        pick=pick,
        repeat=n if expand_cache else 1,
        preallocate=preallocate,
    )


def generate_samples(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    expand_cache: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "sample",
    preallocate: bool = True,
) -> list[list[Generation]]:
    """`n` sampled responses to each prompt (already formatted), in the caller's order.

    `batch_size` counts sequences (prompts x samples) per forward pass; a batch holds
    `max(1, batch_size // n)` prompts. See the module docstring for how rows are seeded.
    `preallocate=False` is the engine as it was before the in-place KV cache (transformers'
    concatenating cache, its own per-step masks, uniforms gathered by a 2-D index): the same
    samples, the sampling bench's reference.
    """
    _check_args(max_new_tokens, batch_size)
    _check_sampling(n, temperature, top_p)
    if not prompts:
        return []
    eos_ids, pad_id, encoded, order = _prepare(
        tokenizer, prompts, model, max_new_tokens, eos_token_id
    )
    per_batch = max(1, batch_size // n)
    results: list[list[Generation]] = [[] for _ in encoded]
    bar = tqdm(total=len(encoded), desc=desc, unit="q", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), per_batch):
            batch = order[start : start + per_batch]
            # row k * n + j of the decoded batch is sample j of prompt batch[k]
            uniforms = torch.from_numpy(
                np.stack(
                    [row_uniforms(seed, i, j, max_new_tokens) for i in batch for j in range(n)]
                )
            )
            pick = _Sampler(uniforms, temperature, top_p, by_column=preallocate)
            prompt_ids = [encoded[i] for i in batch]
            try:
                new_tokens = _sample_batch(
                    model, prompt_ids, n, expand_cache, pad_id, max_new_tokens, eos_ids, pick,
                    preallocate,
                )  # fmt: skip
            except CacheCannotRepeat:  # e.g. a static or hybrid cache: repeat the prompts
                expand_cache = False
                new_tokens = _sample_batch(
                    model, prompt_ids, n, False, pad_id, max_new_tokens, eos_ids, pick,
                    preallocate,
                )  # fmt: skip
            for k, i in enumerate(batch):
                results[i] = [_finish(tokenizer, new_tokens[k * n + j], eos_ids) for j in range(n)]
            bar.update(len(batch))
    bar.close()
    return results


@dataclass(frozen=True)
class Confidence:
    """Teacher-forced statistics of one response: means over its tokens (EOS included)."""

    mean_logprob: float
    mean_entropy: float
    num_tokens: int


def response_confidence(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
) -> list[Confidence]:
    """Log-probability and entropy of each response's tokens given its prompt.

    Rows are left-padded with the decoder's position ids, so the logits are those the decoder saw
    (up to float rounding). Only the last `max response length + 1` positions get logits.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    _check_args(1, batch_size)
    if not prompts:
        return []
    if any(len(r) == 0 for r in responses):
        raise DataError("a response to score has no tokens")
    encoded = _encode(tokenizer, prompts, model, 1)
    context = _context_length(model)
    full = [[*p, *r] for p, r in zip(encoded, responses, strict=True)]
    for i, ids in enumerate(full):
        if context is not None and len(ids) > context:
            raise DataError(f"prompt + response {i} has {len(ids)} tokens > context {context}")
    pad_id = _pad_id(tokenizer, _eos_ids(tokenizer, None, model))
    keep_logits = _forward_accepts(model, "logits_to_keep")
    with_positions = _forward_accepts(model, "position_ids")
    order = _longest_first(full)
    results: list[Confidence | None] = [None] * len(full)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            longest = max(len(responses[i]) for i in batch)
            input_ids, attention_mask = _left_pad([full[i] for i in batch], pad_id, model.device)
            extra: dict = {}
            if with_positions:
                extra["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            if keep_logits:
                extra["logits_to_keep"] = longest + 1
            logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[
                :, -(longest + 1) :
            ]
            # column c of `logits` predicts the token at column c + 1 of the last longest+1 ones
            for row, i in enumerate(batch):
                size = len(responses[i])
                logp = torch.log_softmax(logits[row, longest - size : longest].float(), dim=-1)
                target = torch.tensor(responses[i], dtype=torch.long, device=logp.device)
                token_logp = logp.gather(-1, target[:, None]).squeeze(-1)
                entropy = torch.special.entr(logp.exp()).sum(-1)
                mean_logp, mean_entropy = float(token_logp.mean()), float(entropy.mean())
                if not (math.isfinite(mean_entropy) and not math.isnan(mean_logp)):
                    raise CheckpointError(
                        "the model produced NaN log-probabilities (broken checkpoint?)"
                    )
                results[i] = Confidence(mean_logp, mean_entropy, size)
    return [r for r in results if r is not None]
