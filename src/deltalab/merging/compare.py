"""How two task vectors of one base relate: the compatibility check every merge of several
vectors runs first, and entry-by-entry statistics (sign conflict, overlap, norms, energy kept)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deltalab.errors import CheckpointError
from deltalab.merging.vectors import TaskVector
from deltalab.tensors.blocks import matrix_shape, row_chunks, sum_squares


def compare_vectors(a: TaskVector, b: TaskVector, chunk_elements: int = 2**25) -> dict:
    """How two sparse task vectors of one base relate, entry by entry (rescale applied).

    `sign_conflict`: among entries kept (and nonzero) in both, the share with opposite signs, and
    `sign_conflict_of_all`: the same count over all entries (the published "~7%" is of this kind);
    `overlap`: entries kept by both / entries kept by either (Jaccard of the masks);
    `norm_ratio`: ‖a‖/‖b‖ of the sparse vectors, and `dense_norm_ratio` of the dense deltas;
    `energy_kept_{a,b}`: ‖τ_k‖²/‖τ‖² before rescale.
    """
    check_vector_pair([a, b])
    both = common_kept = either = conflicts = total = 0
    norm2 = [0.0, 0.0]
    for name, e in a.entries.items():
        if name not in b.entries:
            continue
        ranges = row_chunks(*matrix_shape(e["shape"]), chunk_elements)
        for (start, stop), (ia, va), (ib, vb) in zip(
            ranges, a.sparse_chunks(name, ranges), b.sparse_chunks(name, ranges), strict=True
        ):
            n = stop - start
            total += n
            ia = np.arange(n) if ia is None else ia
            ib = np.arange(n) if ib is None else ib
            common, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
            sa, sb = np.sign(va.numpy()[pa]), np.sign(vb.numpy()[pb])
            nonzero = (sa != 0) & (sb != 0)
            both += int(nonzero.sum())
            conflicts += int((nonzero & (sa != sb)).sum())
            common_kept += common.size
            either += ia.size + ib.size - common.size
            norm2[0] += sum_squares(va)
            norm2[1] += sum_squares(vb)

    def energy(v: TaskVector) -> float:
        full = sum(x["norm"] ** 2 for x in v.entries.values())
        return sum(x["sparse_norm"] ** 2 for x in v.entries.values()) / full if full else 0.0

    def dense_norm(v: TaskVector) -> float:
        return math.sqrt(sum(x["norm"] ** 2 for x in v.entries.values()))

    na, nb = math.sqrt(norm2[0]), math.sqrt(norm2[1])
    return {
        "sign_conflict": conflicts / both if both else 0.0,
        "sign_conflict_of_all": conflicts / total if total else 0.0,
        "kept_by_both": both,
        "overlap": common_kept / either if either else 0.0,
        "norm_a": na,
        "norm_b": nb,
        "norm_ratio": na / nb if nb else float("inf"),
        "dense_norm_ratio": dense_norm(a) / dense_norm(b) if dense_norm(b) else float("inf"),
        "energy_kept_a": energy(a),
        "energy_kept_b": energy(b),
        "top_ratio_a": a.top_ratio,
        "top_ratio_b": b.top_ratio,
    }


def check_vector_pair(vectors: Sequence[TaskVector]) -> None:
    """Vectors merged together must come from one base and have the same tensors and shapes."""
    first = vectors[0]
    for other in vectors[1:]:
        if other.meta.get("base_sha256") != first.meta.get("base_sha256"):
            # the digest covers each vector's own tensors: one base, different tensor sets
            differ = sorted(set(first.entries) ^ set(other.entries))
            if differ and other.meta.get("base") == first.meta.get("base"):
                raise CheckpointError(
                    f"{other.path}: covers other tensors of {first.meta.get('base')} than "
                    f"{first.path} (in only one of them: {differ[:5]}); a finetune that stores "
                    "a tensor as integers has no task vector for it"
                )
            raise CheckpointError(
                f"{other.path}: made from a different base than {first.path} "
                f"({other.meta.get('base')} vs {first.meta.get('base')})"
            )
        for name, e in other.entries.items():
            mine = first.entries.get(name)
            if mine is None or mine["shape"] != e["shape"]:
                raise CheckpointError(
                    f"{other.path}: tensor {name!r} {e['shape']} does not match {first.path} "
                    f"({None if mine is None else mine['shape']}): different architectures"
                )


def pair_metrics(stats: dict, names: Sequence[str], ratios: dict[str, float], rescale: str) -> dict:
    """The task_vectors stage's metrics of the pair `names` (a, b) from `compare_vectors`."""
    a, b = names
    return {
        a: {"top_ratio": ratios[a], "energy_kept": stats["energy_kept_a"], "norm": stats["norm_a"]},
        b: {"top_ratio": ratios[b], "energy_kept": stats["energy_kept_b"], "norm": stats["norm_b"]},
        "sign_conflict": stats["sign_conflict"],
        "sign_conflict_of_all": stats["sign_conflict_of_all"],
        "overlap": stats["overlap"],
        f"norm_ratio_{a}_{b}": stats["norm_ratio"],
        f"dense_norm_ratio_{a}_{b}": stats["dense_norm_ratio"],
        "rescale": rescale,
    }
