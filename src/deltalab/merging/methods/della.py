"""DELLA (Deep et al. 2024): MAGPRUNE keeps entry j with probability p_j that grows with its
magnitude rank, from density − ε (smallest) to density + ε (largest), and rescales each kept
entry by 1 / p_j (the paper's rescale; mergekit rescales the whole tensor to its L1 norm
instead), then adds (della_linear) or merges the TIES way (della). Ranks are per tensor."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import descending_ranks


def keep_probabilities(tau: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    n = tau.numel()
    if n == 1:
        return torch.full_like(tau, density)
    # rank 0 (largest) → density + ε, rank n − 1 (smallest) → density − ε
    spread = 1.0 - descending_ranks(tau).to(torch.float32) / (n - 1)
    return (density - epsilon) + spread * (2 * epsilon)


def prune(taus: torch.Tensor, density: float, epsilon: float, uniforms) -> torch.Tensor:
    if density >= 1.0:
        return taus
    out = []
    for i, t in enumerate(taus):
        p = keep_probabilities(t, density, epsilon)
        out.append(torch.where(uniforms(i, t.numel()) < p, t / p, torch.zeros_like(t)))
    return torch.stack(out)


def prepare(taus, params, uniforms):
    return prune(taus, params.density, params.epsilon, uniforms)
