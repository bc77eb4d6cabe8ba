"""TIES (Yadav et al. 2023): trim each vector to its top `density` by magnitude, elect each
entry's sign by the summed scaled vectors, average the entries that agree (disjoint mean)."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import elect_and_mean, trim, weighted


def merge(taus, scales, params, uniforms=None):
    trimmed = torch.stack([trim(t, params.density) for t in taus])
    return elect_and_mean(weighted(trimmed, scales), scales, normalize=params.normalize)
