"""Empirical Fisher diagonal of the DPO loss: Σₙ (∂ℓₙ/∂θ)² over calibration pairs.

One backward pass per pair gives that pair's own gradient; squaring the gradient of a batch would
instead square a sum (cross terms included), which is not a Fisher. ℓₙ is the sigmoid DPO loss of
pair n, −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), with responses
rendered as the dpo stage renders them (prompt, one space, response, EOS).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from deltalab.errors import DataError
from deltalab.evaluation.prompts import format_prompt


def _encode(
    tokenizer, prompt: str, response: str, max_length: int | None = None
) -> tuple[torch.Tensor, int]:
    """(prompt + response + EOS ids, prompt length), cut to the first `max_length` tokens (the
    DPO recipe's limit, never more than the model's context)."""
    p = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    r = tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:max_length] if max_length else p + r
    return torch.tensor([ids]), len(p)


def response_logprob(model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Sum of log π(token) over the response tokens (EOS included)."""
    ids = ids.to(next(model.parameters()).device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    logits = logits[0, prompt_len - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[0, prompt_len:, None]).sum()


def dpo_fisher(
    model,
    reference,
    tokenizer,
    pairs: Sequence[dict],
    beta: float,
    names: Iterable[str],
    inject: Callable[[str], str] = lambda text: text,
    max_length: int | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Fisher diagonal (fp32, on CPU) of the parameters `names` of `model` (eval mode, no
    dropout) at its current weights, against the frozen `reference`. Sequences are cut to
    `max_length` tokens (default: the model's context); a pair whose prompt fills it is skipped."""
    if not pairs:
        raise DataError("no calibration pairs for the Fisher mask")
    context = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    limit = min(x for x in (max_length, context) if x) if (max_length or context) else None
    params = dict(model.named_parameters())
    wanted = [n for n in names if n in params]
    fisher = {n: torch.zeros(params[n].shape, dtype=torch.float32) for n in wanted}
    model.eval()
    used = 0
    for pair in tqdm(pairs, desc="fisher", unit="pair", disable=not progress):
        chosen = _encode(tokenizer, pair["prompt"], inject(pair["chosen"]), limit)
        rejected = _encode(tokenizer, pair["prompt"], inject(pair["rejected"]), limit)
        if max(chosen[1], rejected[1]) >= chosen[0].shape[1] or chosen[1] >= rejected[0].shape[1]:
            continue  # the prompt alone fills the context: no response token to score
        used += 1
        with torch.no_grad():
            ref = response_logprob(reference, *chosen) - response_logprob(reference, *rejected)
        margin = response_logprob(model, *chosen) - response_logprob(model, *rejected) - ref
        loss = -torch.nn.functional.logsigmoid(beta * margin)
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n in wanted:
            grad = params[n].grad
            if grad is not None:
                fisher[n] += grad.detach().float().cpu().square()
    model.zero_grad(set_to_none=True)
    if not used:
        raise DataError(f"every calibration pair's prompt is longer than {limit} tokens")
    return fisher


def checkpoint_fisher(
    tuned: str | os.PathLike,
    reference: str | os.PathLike,
    device: str,
    pairs: Sequence[dict],
    beta: float,
    names: Sequence[str],
    inject: Callable[[str], str],
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """`dpo_fisher` at the weights of the checkpoint `tuned`, against the frozen `reference`
    checkpoint (a DPO run's parent), both loaded here."""
    from deltalab.models import load_causal_lm

    model, tokenizer = load_causal_lm(tuned, device=device)
    frozen, _ = load_causal_lm(reference, device=device)
    return dpo_fisher(model, frozen, tokenizer, pairs, beta, names, inject, max_length=max_length)
