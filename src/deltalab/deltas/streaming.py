"""Streaming one tensor of a group of deltas that share a base: its analysis units (a tensor, or
the q/k/v column slices of a fused one) and its row chunks of W and each Δ in fp32."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from deltalab.deltas.classify import classify, fused_parts
from deltalab.tensors.blocks import BlockReader, delta_into, f32_into, matrix_shape, row_chunks
from deltalab.tensors.reader import Buffer, Checkpoint


@dataclass(frozen=True)
class Unit:
    """One analysed part of a tensor; its rows of the analysis tables are named `name`."""

    name: str  # display name; parts of a fused tensor get a [q]/[k]/[v] suffix
    tensor: str
    layer: int | None
    module: str
    cols: tuple[int, int] | None  # column slice of the (rows, cols) view
    is_matrix: bool


def units(name: str, shape: tuple[int, ...]) -> tuple[tuple[int, int], list[Unit]]:
    """The (rows, cols) view a tensor is streamed in and the units it is analysed as."""
    loc = classify(name)
    parts = fused_parts(name, shape)
    if parts:
        view = (1, shape[0]) if len(shape) == 1 else matrix_shape(shape)
        return view, [
            Unit(f"{name}[{suffix}]", name, loc.layer, module, (c0, c1), len(shape) >= 2)
            for suffix, module, c0, c1 in parts
        ]
    return matrix_shape(shape), [Unit(name, name, loc.layer, loc.module, None, len(shape) >= 2)]


def part(t: torch.Tensor, unit: Unit) -> torch.Tensor:
    """The columns of a row chunk that belong to `unit`."""
    return t if unit.cols is None else t[:, unit.cols[0] : unit.cols[1]].contiguous()


class Source:
    """Row chunks of one tensor: base W and each delta Δ_j (fp32, rows × cols; Δ_j is None or
    has fewer rows where its checkpoint has fewer rows), built block by block into `buffers`
    (reused from tensor to tensor: fresh memory page-faults). A single chunk is read once and
    cached."""

    def __init__(
        self,
        name: str,
        base: Checkpoint,
        finetuned: Sequence[Checkpoint],
        view: tuple[int, int],
        shared_rows: Sequence[int],
        chunk_elements: int,
        buffers: Sequence[Buffer],
    ) -> None:
        self.name, self.base, self.finetuned = name, base, finetuned
        self.rows, self.cols = view
        self.shared_rows = list(shared_rows)
        self.ranges = row_chunks(self.rows, self.cols, chunk_elements)
        self._cache: tuple | None = None
        self._bufs = buffers
        self._readers = (BlockReader(), BlockReader())

    @property
    def single(self) -> bool:
        return len(self.ranges) == 1

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, list[torch.Tensor | None]]]:
        if self._cache is not None:
            yield self._cache
            return
        for start, stop in self.ranges:
            r0, r1 = start // self.cols, stop // self.cols
            w = self._bufs[0].get(4 * (stop - start)).view(torch.float32)
            f32_into(self.base, self.name, start, stop, w, self._readers[0])
            ds: list[torch.Tensor | None] = []
            for j, (ft, shared) in enumerate(zip(self.finetuned, self.shared_rows, strict=True)):
                rows = max(0, min(r1, shared) - r0)
                if rows == 0:
                    ds.append(None)
                    continue
                end = start + rows * self.cols
                d = self._bufs[j + 1].get(4 * (end - start)).view(torch.float32)
                delta_into(self.base, ft, self.name, start, end, end, d, self._readers)
                ds.append(d.view(rows, self.cols))
            item = (r0, w.view(r1 - r0, self.cols), ds)
            if self.single:
                self._cache = item
            yield item
