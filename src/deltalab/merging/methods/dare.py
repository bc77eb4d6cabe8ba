"""DARE (Yu et al. 2023): drop each entry with probability 1 − density and rescale the rest by
1 / density, then add (dare_linear) or merge the TIES way (dare_ties). The drops come from
device-independent uniforms (`randomness.uniforms`), so a seed gives one mask everywhere."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import elect_and_mean, weighted


def drop(taus: torch.Tensor, density: float, uniforms) -> torch.Tensor:
    if density >= 1.0:
        return taus
    keep = torch.stack([uniforms(i, t.numel()) < density for i, t in enumerate(taus)])
    return taus * keep / density


def merge_linear(taus, scales, params, uniforms):
    return weighted(drop(taus, params.density, uniforms), scales).sum(0)


def merge_ties(taus, scales, params, uniforms):
    dropped = weighted(drop(taus, params.density, uniforms), scales)
    return elect_and_mean(dropped, scales, normalize=params.normalize)
