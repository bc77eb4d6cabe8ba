"""Empirical Fisher diagonal of the DPO loss: Σₙ (∂ℓₙ/∂θ)² over calibration pairs.

One backward pass per pair gives that pair's own gradient; squaring the gradient of a batch would
instead square a sum (cross terms included), which is not a Fisher. ℓₙ is the sigmoid DPO loss of
pair n, −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), with responses
rendered as the dpo stage renders them (prompt, one space, response, EOS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from deltalab.errors import DataError
from deltalab.evaluation.generation import format_prompt


def _encode(tokenizer, prompt: str, response: str) -> tuple[torch.Tensor, int]:
    p = tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]
    r = tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor([p + r]), len(p)


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
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Fisher diagonal (fp32, on CPU) of the parameters `names` of `model` (eval mode, no
    dropout) at its current weights, against the frozen `reference`."""
    if not pairs:
        raise DataError("no calibration pairs for the Fisher mask")
    params = dict(model.named_parameters())
    wanted = [n for n in names if n in params]
    fisher = {n: torch.zeros(params[n].shape, dtype=torch.float32) for n in wanted}
    model.eval()
    for pair in tqdm(pairs, desc="fisher", unit="pair", disable=not progress):
        chosen = _encode(tokenizer, pair["prompt"], inject(pair["chosen"]))
        rejected = _encode(tokenizer, pair["prompt"], inject(pair["rejected"]))
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
    return fisher
