"""Merge methods, one small module each, behind one registry.

A method takes the task vectors of one tensor as rows of an fp32 matrix [m, n] (flat; read
from the sparse or dense vector files one tensor at a time), their scales, its parameters and
a source of seeded uniforms, and returns the merged delta [n]; the writer adds it to the base
in fp32 and casts once, for the checkpoint on disk and the live model alike.

Every method is two steps: `prepare` (trims, drops, rescales: each vector alone, independent of
the scales) and `combine` (the scaled vectors into one delta: a sum, TIES's election, RAM's
rule). The merge is combine(prepare(τ)), so the live merge can keep the prepared vectors across
trials that change only the scales and still hold the written bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from deltalab.merging.method_spec import METHOD_NAMES, RANDOM, READS, MethodParams, check
from deltalab.merging.methods import breadcrumbs, dare, della, ram, task_arithmetic, ties
from deltalab.merging.methods.common import elected, summed
from deltalab.merging.methods.randomness import uniforms

__all__ = [
    "METHODS",
    "Method",
    "MethodParams",
    "check",
    "combine_delta",
    "merge_delta",
    "prepare_delta",
]

# (vector index, numel, start) -> uniforms in [0, 1) for elements start .. start + numel
Uniforms = Callable[..., torch.Tensor]


def _as_is(taus: torch.Tensor, params: MethodParams, uniforms: Uniforms | None = None):
    return taus


@dataclass(frozen=True)
class Method:
    name: str
    prepare: Callable[..., torch.Tensor]  # (taus [m, n], params, uniforms) -> prepared, in place
    combine: Callable[..., torch.Tensor]  # (prepared [m, n], scales, params) -> delta [n]

    @property
    def prepares(self) -> bool:
        """Whether `prepare` changes the vectors (a live merge then keeps a prepared copy)."""
        return self.prepare is not _as_is

    @property
    def reads(self) -> tuple[str, ...]:
        return READS[self.name]

    @property
    def random(self) -> bool:
        return self.name in RANDOM


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("task_arithmetic", _as_is, task_arithmetic.combine),
        Method("ties", ties.prepare, elected),
        Method("dare_linear", dare.prepare, summed),
        Method("dare_ties", dare.prepare, elected),
        Method("della_linear", della.prepare, summed),
        Method("della", della.prepare, elected),
        Method("breadcrumbs", breadcrumbs.prepare, summed),
        Method("breadcrumbs_ties", breadcrumbs.prepare, elected),
        Method("ram", _as_is, ram.combine),
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
    methods, so a tensor's drops do not depend on which others are merged or in what order.
    `taus` are left as they are."""
    own = taus.float().clone() if METHODS[name].prepares else taus.float()
    return combine_delta(name, prepare_delta(name, own, params, key), scales, params)


def prepare_delta(
    name: str, taus: torch.Tensor, params: MethodParams, key: str = ""
) -> torch.Tensor:
    """The scale-independent step of `merge_delta`: each vector trimmed, dropped or rescaled, in
    place (fp32 `taus` are overwritten: pass a stack the caller does not need again)."""
    method = METHODS[name]

    def draw(vector: int, numel: int, start: int = 0) -> torch.Tensor:
        return uniforms(params.seed, f"{key}/{vector}", numel, start, device=taus.device)

    return method.prepare(taus.float(), params, draw if method.random else None)


def combine_delta(
    name: str, prepared: torch.Tensor, scales: Sequence[float], params: MethodParams
) -> torch.Tensor:
    """The scaled step of `merge_delta`: prepared vectors [m, n] → the merged delta [n]."""
    return METHODS[name].combine(prepared, [float(s) for s in scales], params)
