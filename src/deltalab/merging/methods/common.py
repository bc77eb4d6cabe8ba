"""What several merge methods share: exact top-k trimming, magnitude ranks, and TIES's sign
election with its disjoint mean. All on flat fp32 task vectors of one tensor, stacked [m, n]."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltalab.tensors.topk import topk_count, topk_mask


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """τ with all but its round(density · n) largest-magnitude entries zeroed (exactly that
    many: ties broken by the lowest index, as the sparse task vectors are)."""
    if density >= 1.0:
        return tau
    return tau * topk_mask(tau, topk_count(tau.numel(), density))


def descending_ranks(tau: torch.Tensor) -> torch.Tensor:
    """0 for the largest |τ|, n − 1 for the smallest (ties: the lower index ranks first)."""
    order = torch.sort(tau.abs(), descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(tau.numel(), device=tau.device)
    return ranks


def weighted(taus: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    w = torch.tensor(list(scales), dtype=taus.dtype, device=taus.device)
    return taus * w[:, None]


def elect_and_mean(
    weighted_taus: torch.Tensor, scales: Sequence[float], normalize: bool
) -> torch.Tensor:
    """TIES's merge of (already trimmed and scaled) vectors: the sign of their sum is elected per
    entry (0 counts as +), entries of the other sign (and zeros) are dropped, and the rest are
    summed; `normalize` divides by the summed scales of the entries kept (the disjoint mean)."""
    elected = torch.where(weighted_taus.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(weighted_taus) == elected
    merged = (weighted_taus * agree).sum(0)
    if not normalize:
        return merged
    w = torch.tensor(list(scales), dtype=weighted_taus.dtype, device=weighted_taus.device)
    divisor = (agree * w[:, None]).sum(0)
    return merged / torch.where(divisor == 0, torch.ones_like(divisor), divisor)


def summed(prepared: torch.Tensor, scales: Sequence[float], params=None) -> torch.Tensor:
    """Σ sᵢ · τᵢ: task arithmetic's combination (and the linear variants')."""
    return weighted(prepared, scales).sum(0)


def elected(prepared: torch.Tensor, scales: Sequence[float], params) -> torch.Tensor:
    """TIES's combination (ties, dare_ties, della, breadcrumbs_ties): sign election and the
    disjoint mean when `params.normalize`."""
    return elect_and_mean(weighted(prepared, scales), scales, normalize=params.normalize)
