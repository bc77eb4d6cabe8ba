"""The SFT loss: mean next-token cross-entropy over label positions, the LM head applied to those
positions only; checked against a naive float64 computation from the full logits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from deltalab.train.sft import TokenMeanSFTTrainer


def _model(dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0,
        eos_token_id=0, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        activation_function="gelu_pytorch_tanh",
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def _batch():
    """Three rows, right-padded; the prompt (and padding) masked out of the labels with -100."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0], [15, 16, 17, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[6], [4], [3]])).long()
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :2] = -100  # prompt tokens
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _naive_loss(model, batch) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double(), dim=-1)
    total, count = 0.0, 0
    for row in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(batch["labels"][row, t + 1])
            if target != -100:
                total -= float(logp[row, t, target])
                count += 1
    return total / count


def _trainer(processes: int = 1) -> TokenMeanSFTTrainer:
    # compute_loss needs only the accelerator's unwrap; no dataset, no TRL setup
    trainer = TokenMeanSFTTrainer.__new__(TokenMeanSFTTrainer)
    trainer.accelerator = SimpleNamespace(unwrap_model=lambda m: m, num_processes=processes)
    trainer.args = SimpleNamespace(average_tokens_across_devices=True)
    return trainer


def test_loss_is_the_token_mean_cross_entropy_of_label_positions():
    model, batch = _model().eval(), _batch()
    loss = _trainer().compute_loss(model, dict(batch))
    assert float(loss) == pytest.approx(_naive_loss(model, batch), rel=1e-6)
    # = transformers' own causal-LM loss, which the stock Trainer would use
    reference = model(**batch).loss
    assert float(loss) == pytest.approx(float(reference), rel=1e-6)


def test_num_items_in_batch_divides_the_sum():
    model, batch = _model().eval(), _batch()
    n_labels = 4 + 2 + 1  # label positions that have a next-token target
    loss = _trainer().compute_loss(model, dict(batch), num_items_in_batch=2 * n_labels)
    assert float(loss) == pytest.approx(_naive_loss(model, batch) / 2, rel=1e-6)
    # on one of 2 ranks: its tokens' sum over both ranks' count, times 2 (DDP averages ranks)
    two = _trainer(processes=2).compute_loss(model, dict(batch), num_items_in_batch=2 * n_labels)
    assert float(two) == pytest.approx(_naive_loss(model, batch), rel=1e-6)


def test_gradients_match_the_full_logits_loss():
    model, batch = _model(), _batch()
    _trainer().compute_loss(model, dict(batch)).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(**batch).loss.backward()
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, rtol=1e-4, atol=1e-7), name
    assert math.isfinite(float(ours["transformer.wte.weight"].abs().sum()))
