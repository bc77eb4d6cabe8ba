"""Overlap of binary masks: Jaccard/IoU pooled and per tensor, beside the random expectation.

Counts come straight from the packed bits (popcount of a & b and a | b), so comparing two masks of
an 8B model reads ~2 GB and never unpacks a whole tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from deltalab.errors import CheckpointError
from deltalab.masks.build import MaskFile, layer_module


def random_jaccard(rho_a: float, rho_b: float) -> float:
    """Expected Jaccard of independent random masks of densities ρa, ρb: ρaρb/(ρa+ρb−ρaρb)."""
    union = rho_a + rho_b - rho_a * rho_b
    return rho_a * rho_b / union if union > 0 else 0.0


def _popcount(x: np.ndarray) -> int:
    return int(np.bitwise_count(x).sum(dtype=np.int64))


def _movable(mask: MaskFile, name: str) -> int:
    """Entries the mask could select in a tensor: those its run changed, when it says so."""
    entry = mask.entries[name]
    return entry.get("movable", math.prod(entry["shape"]))


def jaccard(a: MaskFile, b: MaskFile) -> dict[str, Any]:
    """Jaccard of two masks over the tensors they share (same shapes), pooled and per tensor;
    `a_in_b` = |A∩B|/|A|; `random` = the expectation for independent masks of the same pooled
    densities over what both could select (entries their run changed, when fewer than all);
    per tensor: name → (jaccard, layer, module)."""
    shared = [n for n in a.entries if n in b.entries]
    if not shared:
        raise CheckpointError(f"{a.path} and {b.path} share no tensor")
    inter = union = size_a = size_b = total = 0
    per_tensor: dict[str, dict[str, Any]] = {}
    for name in shared:
        if a.entries[name]["shape"] != b.entries[name]["shape"]:
            raise CheckpointError(
                f"{b.path}: tensor {name!r} has shape {b.entries[name]['shape']}, "
                f"{a.path} has {a.entries[name]['shape']}"
            )
        pa, pb = a.packed(name), b.packed(name)
        i, u = _popcount(pa & pb), _popcount(pa | pb)
        inter, union = inter + i, union + u
        size_a += _popcount(pa)
        size_b += _popcount(pb)
        total += min(_movable(a, name), _movable(b, name))
        layer, module = layer_module(name)
        per_tensor[name] = {"jaccard": i / u if u else 0.0, "layer": layer, "module": module}
    values = [t["jaccard"] for t in per_tensor.values()]
    return {
        "jaccard": inter / union if union else 0.0,
        "a_in_b": inter / size_a if size_a else 0.0,
        "random": random_jaccard(min(1.0, size_a / total), min(1.0, size_b / total))
        if total
        else 0.0,
        "per_tensor_mean": float(np.mean(values)),
        "per_tensor_min": float(np.min(values)),
        "per_tensor_max": float(np.max(values)),
        "tensors": per_tensor,
    }


def jaccard_table(masks: Mapping[str, MaskFile], reference: str) -> dict[str, dict[str, Any]]:
    """Every mask against every other (pairs in the given order), the reference first."""
    names = [reference, *[n for n in masks if n != reference]]
    out = {}
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            out[f"{y}_vs_{x}"] = jaccard(masks[y], masks[x])
    return out
