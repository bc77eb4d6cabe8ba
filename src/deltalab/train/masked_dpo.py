"""Masked DPO's wiring: which parameters train, the masked AdamW over them, and the bitwise check
that every entry outside the mask is unchanged after training."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from deltalab.tensors.reader import Checkpoint
from deltalab.train.masked_adamw import MaskedAdamW

if TYPE_CHECKING:
    from deltalab.masks.build import MaskFile


def masked_optimizer(
    model: torch.nn.Module, mask: MaskFile, parent: str, learning_rate: float, weight_decay: float
) -> MaskedAdamW:
    """The masked AdamW over the tensors the mask covers; tensors it leaves out (embeddings,
    norms) are frozen whole. The mask's names and shapes are checked against the model first."""
    named = dict(model.named_parameters())
    mask.check_model({n: p.shape for n, p in named.items()}, parent)
    masks = {}
    for name, param in named.items():
        if name in mask.entries:
            masks[param] = mask.mask(name).to(param.device)
        else:
            param.requires_grad_(False)
    trainable = [p for p in named.values() if p.requires_grad]
    return MaskedAdamW(trainable, masks, lr=learning_rate, weight_decay=weight_decay)


def frozen_counts(model: torch.nn.Module, parent: Checkpoint, mask: MaskFile) -> dict[str, int]:
    """Entries outside the mask, how many of them differ from the parent's bits, and inside."""
    frozen = changed = trainable = 0
    for name, param in model.named_parameters():
        after = param.detach().cpu().contiguous()
        before = parent.read(name).view(after.shape).to(after.dtype)  # as the model loaded it
        keep = mask.mask(name) if name in mask.entries else torch.zeros(after.shape, dtype=bool)
        differs = (
            after.view(torch.uint8)
            .view(-1, after.element_size())
            .ne(before.view(torch.uint8).view(-1, after.element_size()))
            .any(1)
        )  # bitwise: -0.0 vs 0.0 and NaN payloads count as changes
        frozen += int((~keep).sum())
        changed += int((differs & ~keep.reshape(-1)).sum())
        trainable += int(keep.sum())
    return {"frozen": frozen, "frozen_changed": changed, "trainable": trainable}


def check_frozen(model: torch.nn.Module, parent: Checkpoint, mask: MaskFile, run: str) -> dict:
    """`frozen_counts`, failing when a frozen entry changed (a bug of the optimizer, never of
    the input)."""
    counts = frozen_counts(model, parent, mask)
    if counts["frozen_changed"]:
        raise RuntimeError(f"{run}: {counts['frozen_changed']} frozen entries changed")
    return counts
