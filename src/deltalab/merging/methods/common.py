"""What several merge methods share: exact top-k trimming, magnitude ranks, and TIES's sign
election with its disjoint mean. All on flat fp32 task vectors of one tensor, stacked [m, n].

`prepare` steps work in place on the stack they are given (the caller owns it: the checkpoint
writer reads a fresh one per tensor, the live merge hands over a copy of its dense vectors);
`combine` steps walk the columns in cache-sized blocks, so an embedding-sized tensor costs its
stack plus a few blocks rather than a dozen whole-tensor temporaries. Every operation is per
entry, so the block size never changes a bit of the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltalab.tensors.topk import topk_count, topk_mask

BLOCK = 1 << 16  # columns combined at a time: [m, BLOCK] fp32 temporaries stay in L2


def trim_(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the round(density · n) largest-magnitude entries of τ, in place (exactly that
    many: ties broken by the lowest index, as the sparse task vectors are)."""
    if density >= 1.0:
        return tau
    return tau.mul_(topk_mask(tau, topk_count(tau.numel(), density)))


def descending_ranks(tau: torch.Tensor) -> torch.Tensor:
    """0 for the largest |τ|, n − 1 for the smallest (ties: the lower index ranks first)."""
    # |τ|'s bit pattern orders like its value; an ascending stable sort of the negated int32
    # patterns is the same permutation as a descending stable float sort, ~3x faster on CPU
    order = torch.sort(-tau.float().abs().view(torch.int32), stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(tau.numel(), device=tau.device)
    return ranks


def columns(n: int, device: torch.device) -> list[tuple[int, int]]:
    step = BLOCK if device.type == "cpu" else max(n, 1)  # a GPU takes the tensor at once
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def scale_column(prepared: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(scales), dtype=prepared.dtype, device=prepared.device)[:, None]


def summed(prepared: torch.Tensor, scales: Sequence[float], params=None) -> torch.Tensor:
    """Σ sᵢ · τᵢ: task arithmetic's combination (and the linear variants')."""
    w = scale_column(prepared, scales)
    out = torch.empty(prepared.shape[1], dtype=prepared.dtype, device=prepared.device)
    for start, stop in columns(prepared.shape[1], prepared.device):
        torch.sum(prepared[:, start:stop] * w, 0, out=out[start:stop])
    return out


def elected(prepared: torch.Tensor, scales: Sequence[float], params) -> torch.Tensor:
    """TIES's combination (ties, dare_ties, della, breadcrumbs_ties): the sign of Σ sᵢ · τᵢ is
    elected per entry (0 counts as +), entries of the other sign (and zeros) are dropped, the rest
    summed; `params.normalize` divides by the summed scales of the entries kept (disjoint mean)."""
    w = scale_column(prepared, scales)
    out = torch.empty(prepared.shape[1], dtype=prepared.dtype, device=prepared.device)
    for start, stop in columns(prepared.shape[1], prepared.device):
        x = prepared[:, start:stop] * w
        elected_sign = torch.where(x.sum(0) >= 0, 1.0, -1.0)
        agree = (x * elected_sign) > 0  # sign(x) == the elected sign (zeros never agree)
        merged = (x * agree).sum(0)
        if params.normalize:
            divisor = (agree * w).sum(0)
            merged /= torch.where(divisor == 0, torch.ones_like(divisor), divisor)
        out[start:stop] = merged
    return out
