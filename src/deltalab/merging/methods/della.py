"""DELLA (Deep et al. 2024): MAGPRUNE keeps entry j with probability p_j that grows with its
magnitude rank, from density − ε (smallest) to density + ε (largest), and rescales each kept
entry by 1 / p_j (the paper's rescale; mergekit rescales the whole tensor to its L1 norm
instead), then adds (della_linear) or merges the TIES way (della). Ranks are per tensor."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import columns, descending_ranks


def keep_probabilities(tau: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    n = tau.numel()
    if n == 1:
        return torch.full_like(tau, density)
    # rank 0 (largest) → density + ε, rank n − 1 (smallest) → density − ε
    spread = 1.0 - descending_ranks(tau).to(torch.float32) / (n - 1)
    return (density - epsilon) + spread * (2 * epsilon)


def prune_(taus: torch.Tensor, density: float, epsilon: float, uniforms) -> torch.Tensor:
    """In place: entry j kept with its probability p_j and rescaled by 1 / p_j."""
    if density >= 1.0:
        return taus
    for i, t in enumerate(taus):
        p = keep_probabilities(t, density, epsilon)
        for start, stop in columns(t.numel(), t.device):
            block, q = t[start:stop], p[start:stop]
            kept = uniforms(i, stop - start, start) < q
            block.copy_(torch.where(kept, block / q, torch.zeros_like(block)))
    return taus


def prepare(taus, params, uniforms):
    return prune_(taus, params.density, params.epsilon, uniforms)
