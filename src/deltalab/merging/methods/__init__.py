"""Merge methods, one small module each, behind one registry.

A method takes the task vectors of one tensor as rows of an fp32 matrix [m, n] (flat; read
from the sparse or dense vector files one tensor at a time), their scales, its parameters and
a source of seeded uniforms, and returns the merged delta [n]; the writer adds it to the base
in fp32 and casts once, for the checkpoint on disk and the live model alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from deltalab.merging.method_names import METHOD_NAMES
from deltalab.merging.methods import breadcrumbs, dare, della, ram, task_arithmetic, ties
from deltalab.merging.methods.randomness import uniforms

Uniforms = Callable[[int, int], torch.Tensor]  # (vector index, numel) -> uniforms in [0, 1)


@dataclass(frozen=True)
class MethodParams:
    """Every method's parameters (each method reads its own; `check` refuses the rest)."""

    density: float = 1.0  # share of entries kept (ties, dare, della, breadcrumbs)
    gamma: float = 0.01  # breadcrumbs: share of largest-magnitude outliers dropped
    epsilon: float = 0.15  # della: keep-probability spread; ram: |τ| that counts as a change
    normalize: bool = True  # TIES-style methods: divide by the agreeing scales (disjoint mean)
    seed: int = 0  # dare, della: the drops' seed


@dataclass(frozen=True)
class Method:
    name: str
    merge: Callable[..., torch.Tensor]
    reads: tuple[str, ...]  # the MethodParams fields it uses
    random: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("task_arithmetic", task_arithmetic.merge, ()),
        Method("ties", ties.merge, ("density", "normalize")),
        Method("dare_linear", dare.merge_linear, ("density", "seed"), random=True),
        Method("dare_ties", dare.merge_ties, ("density", "normalize", "seed"), random=True),
        Method("della_linear", della.merge_linear, ("density", "epsilon", "seed"), random=True),
        Method("della", della.merge_ties, ("density", "epsilon", "normalize", "seed"), random=True),
        Method("breadcrumbs", breadcrumbs.merge_linear, ("density", "gamma")),
        Method("breadcrumbs_ties", breadcrumbs.merge_ties, ("density", "gamma", "normalize")),
        Method("ram", ram.merge, ("epsilon",)),
    )
}


assert set(METHODS) == set(METHOD_NAMES)  # the torch-free list the CLI offers


def check(name: str, params: MethodParams) -> None:
    """A clear ValueError naming the method and the parameter that cannot work."""
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r} (one of {', '.join(METHODS)})")
    reads = METHODS[name].reads
    if "density" in reads and not 0.0 < params.density <= 1.0:
        raise ValueError(f"{name}: density must be in (0, 1], got {params.density}")
    if "gamma" in reads and not 0.0 <= params.gamma < 1.0 - params.density + 1e-12:
        raise ValueError(
            f"{name}: gamma + density must be <= 1 (outliers and kept entries are disjoint), "
            f"got gamma {params.gamma}, density {params.density}"
        )
    if name.startswith("della") and not (
        params.density - params.epsilon > 0.0 and params.density + params.epsilon <= 1.0
    ):
        raise ValueError(
            f"{name}: density ± epsilon must lie in (0, 1], got density {params.density}, "
            f"epsilon {params.epsilon}"
        )
    if name == "ram" and params.epsilon < 0:
        raise ValueError(f"ram: epsilon must be >= 0, got {params.epsilon}")


def merge_delta(
    name: str,
    taus: torch.Tensor,
    scales: Sequence[float],
    params: MethodParams,
    key: str = "",
) -> torch.Tensor:
    """The merged delta of one tensor; `key` (its name) keys the seeded uniforms of the random
    methods, so a tensor's drops do not depend on which others are merged or in what order."""
    method = METHODS[name]

    def draw(vector: int, numel: int) -> torch.Tensor:
        return uniforms(params.seed, f"{key}/{vector}", numel, device=taus.device)

    return method.merge(taus.float(), list(scales), params, draw if method.random else None)
