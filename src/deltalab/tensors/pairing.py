"""Pairing a finetuned checkpoint's tensors with its base's (resized vocabularies, tied weights)."""

from __future__ import annotations

from deltalab.errors import CheckpointError
from deltalab.tensors.reader import Checkpoint


def pair_tensors(base: Checkpoint, finetuned: Checkpoint) -> dict[str, int | None]:
    """Float tensors to compare, in base order → finetuned row count if the vocabulary was resized.

    Tied weights stored on one side only (`lm_head.weight`) pair with the other side's embedding.
    Any other missing or extra tensor, or a shape that differs beyond the first dimension, means
    mismatched architectures and raises CheckpointError naming the file and tensor.
    """
    names = list(base.tensors) + [n for n in finetuned.tensors if n not in base.tensors]
    out: dict[str, int | None] = {}
    for name in names:
        if not base.has(name):
            raise CheckpointError(
                f"{finetuned.file_of(name)}: tensor {name!r} is not in the base {base.path} "
                "(mismatched architectures?)"
            )
        if not finetuned.has(name):
            raise CheckpointError(
                f"{finetuned.path}: tensor {name!r} of the base {base.file_of(name)} is missing "
                "(mismatched architectures?)"
            )
        b, f = base.info(name), finetuned.info(name)
        if not (b.is_float and f.is_float):
            continue
        if b.shape != f.shape:
            if len(b.shape) != len(f.shape) or b.shape[1:] != f.shape[1:] or not b.shape:
                raise CheckpointError(
                    f"{f.path}: tensor {name!r} has shape {list(f.shape)} but the base "
                    f"{b.path} has {list(b.shape)} (mismatched architectures?)"
                )
            out[name] = f.shape[0]
        else:
            out[name] = None
    return out
