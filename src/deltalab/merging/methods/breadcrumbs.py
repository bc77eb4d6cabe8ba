"""Model Breadcrumbs (Davari & Belilovsky 2023): drop each vector's largest-magnitude outliers
(the top `gamma` share) and its smallest entries, keeping exactly round(density · n) entries
ranked just below the outliers; then add (breadcrumbs) or merge the TIES way (breadcrumbs_ties).
Counts are exact: floor(gamma · n) outliers, and a tensor with no outlier to drop (mergekit masks
every tensor under 1 / gamma entries whole) keeps its top entries."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import descending_ranks
from deltalab.tensors.topk import topk_count


def keep_band(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    n = tau.numel()
    k = topk_count(n, density)
    top = min(int(gamma * n), n - k)  # never fewer than k entries left
    ranks = descending_ranks(tau)
    return tau * ((ranks >= top) & (ranks < top + k))


def prepare(taus, params, uniforms=None):
    return torch.stack([keep_band(t, params.density, params.gamma) for t in taus])
