"""DARE (Yu et al. 2023): drop each entry with probability 1 − density and rescale the rest by
1 / density, then add (dare_linear) or merge the TIES way (dare_ties). The drops come from
device-independent uniforms (`randomness.uniforms`), so a seed gives one mask everywhere."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import columns


def drop_(taus: torch.Tensor, density: float, uniforms) -> torch.Tensor:
    """In place: each entry kept with probability `density` and rescaled by 1 / density."""
    if density >= 1.0:
        return taus
    for i, t in enumerate(taus):
        for start, stop in columns(t.numel(), t.device):  # uniforms drawn block by block
            t[start:stop].mul_(uniforms(i, stop - start, start) < density).div_(density)
    return taus


def prepare(taus, params, uniforms):
    return drop_(taus, params.density, uniforms)
