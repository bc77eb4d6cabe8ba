"""Model Breadcrumbs (Davari & Belilovsky 2023): drop each vector's largest-magnitude outliers
(the top `gamma` share) and its smallest entries, keeping exactly round(density · n) entries
ranked just below the outliers; then add (breadcrumbs) or merge the TIES way (breadcrumbs_ties).
Counts are exact: floor(gamma · n) outliers, and a tensor with no outlier to drop (under 1 / gamma
entries) keeps its top entries, never an empty mask."""

from __future__ import annotations

import torch

from deltalab.tensors.topk import topk_count, topk_mask


def band_mask(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Ranks [top, top + k) by descending |τ| (ties: the lower index first), as the difference of
    two exact top-k masks: no sort."""
    n = tau.numel()
    k = topk_count(n, density)
    top = min(int(gamma * n), n - k)  # never fewer than k entries left
    return topk_mask(tau, top + k) & ~topk_mask(tau, top)


def prepare(taus, params, uniforms=None):
    for t in taus:
        t.mul_(band_mask(t, params.density, params.gamma))
    return taus
