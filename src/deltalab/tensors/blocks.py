"""Block-wise loops over tensor element ranges: fp32 conversion, finetuned − base, row chunks.

One block size for every fused read/convert/subtract/count loop: a block stays in the CPU cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from deltalab.tensors.hashing import Sha256
from deltalab.tensors.reader import Buffer, SafetensorsReader

BLOCK = 1 << 20  # elements per block of every fused read/convert/subtract/count loop
SMALL = 1 << 15  # below this many elements, numpy (no OpenMP start-up) beats torch's kernels


def sum_squares(x: torch.Tensor) -> float:
    """Σ x² (float64 for small inputs, torch's cascade-summed fp32 norm for large ones)."""
    if x.numel() < SMALL:
        a = x.reshape(-1).numpy().astype(np.float64)
        return float(np.dot(a, a))
    return float(torch.linalg.vector_norm(x)) ** 2


class BlockReader:
    """Reads blocks of tensors into a few rotating buffers, so a block just read is still in the
    CPU cache when it is converted, and a block queued for hashing is not overwritten (a
    `Sha256` keeps at most 2 pending updates; 4 buffers rotate)."""

    def __init__(self, rotate: int = 4) -> None:
        self._bufs = [Buffer() for _ in range(rotate)]
        self._i = 0

    def read(self, ckpt: SafetensorsReader, name: str, start: int, stop: int) -> torch.Tensor:
        self._i += 1
        return ckpt.read(name, start, stop, self._bufs[self._i % len(self._bufs)])


def f32_into(
    ckpt: SafetensorsReader,
    name: str,
    start: int,
    stop: int,
    out: torch.Tensor,
    reader: BlockReader,
) -> torch.Tensor:
    """Elements [start, stop) of a tensor converted to fp32 into `out`, block by block."""
    for s in range(start, stop, BLOCK):
        e = min(s + BLOCK, stop)
        out[s - start : e - start].copy_(reader.read(ckpt, name, s, e))
    return out


def delta_into(
    base: SafetensorsReader,
    finetuned: SafetensorsReader,
    name: str,
    start: int,
    stop: int,
    shared: int,
    out: torch.Tensor,
    readers: tuple[BlockReader, BlockReader],
    base_out: torch.Tensor | None = None,
    hashes: tuple[Sha256 | None, Sha256 | None] = (None, None),
) -> float:
    """Write finetuned − base (fp32) of flat elements [start, stop) into `out`, block by block
    (read, hash, convert and subtract while the block is in cache); 0 beyond `shared` (rows the
    finetuned model lacks). `base_out` receives the base in fp32. Returns Σ delta²."""
    norm2 = 0.0
    for s in range(start, stop, BLOCK):
        e = min(s + BLOCK, stop)
        raw_b = readers[0].read(base, name, s, e)
        if hashes[0] is not None:
            hashes[0].update(raw_b)
        if base_out is not None:
            base_out[s - start : e - start].copy_(raw_b)
        d = out[s - start : e - start]
        f_end = max(s, min(e, shared))
        if f_end > s:
            raw_f = readers[1].read(finetuned, name, s, f_end)
            if hashes[1] is not None:
                hashes[1].update(raw_f)
            d[: f_end - s].copy_(raw_f)
            d[: f_end - s].sub_(raw_b[: f_end - s])
        if f_end < e:
            d[f_end - s :].zero_()
        norm2 += sum_squares(d)
    return norm2


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) view of a tensor: first dim × the rest; 1-D tensors are one column."""
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1


def row_chunks(rows: int, cols: int, max_elements: int) -> list[tuple[int, int]]:
    """Flat element ranges of whole rows, about `max_elements` each; starts are multiples of 8."""
    n = rows * cols
    if n <= max_elements:
        return [(0, n)]
    per = max(8, (max_elements // max(cols, 1)) // 8 * 8)
    return [(r * cols, min(r + per, rows) * cols) for r in range(0, rows, per)]
