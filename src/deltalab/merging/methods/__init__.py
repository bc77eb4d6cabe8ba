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

from deltalab.merging.method_spec import METHOD_NAMES, RANDOM, READS, MethodParams, check
from deltalab.merging.methods import breadcrumbs, dare, della, ram, task_arithmetic, ties
from deltalab.merging.methods.randomness import uniforms

__all__ = ["METHODS", "Method", "MethodParams", "check", "merge_delta"]

Uniforms = Callable[[int, int], torch.Tensor]  # (vector index, numel) -> uniforms in [0, 1)


@dataclass(frozen=True)
class Method:
    name: str
    merge: Callable[..., torch.Tensor]

    @property
    def reads(self) -> tuple[str, ...]:
        return READS[self.name]

    @property
    def random(self) -> bool:
        return self.name in RANDOM


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("task_arithmetic", task_arithmetic.merge),
        Method("ties", ties.merge),
        Method("dare_linear", dare.merge_linear),
        Method("dare_ties", dare.merge_ties),
        Method("della_linear", della.merge_linear),
        Method("della", della.merge_ties),
        Method("breadcrumbs", breadcrumbs.merge_linear),
        Method("breadcrumbs_ties", breadcrumbs.merge_ties),
        Method("ram", ram.merge),
    )
}
assert set(METHODS) == set(METHOD_NAMES)  # every method the spec names has its computation


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
