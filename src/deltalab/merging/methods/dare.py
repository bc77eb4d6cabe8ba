"""DARE (Yu et al. 2023): drop each entry with probability 1 − density and rescale the rest by
1 / density, then add (dare_linear) or merge the TIES way (dare_ties). The drops come from
device-independent uniforms (`randomness.uniforms`), so a seed gives one mask everywhere."""

from __future__ import annotations

import torch


def drop(taus: torch.Tensor, density: float, uniforms) -> torch.Tensor:
    if density >= 1.0:
        return taus
    keep = torch.stack([uniforms(i, t.numel()) < density for i, t in enumerate(taus)])
    return taus * keep / density


def prepare(taus, params, uniforms):
    return drop(taus, params.density, uniforms)
