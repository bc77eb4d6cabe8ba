"""The one merge step that the checkpoint writer and the in-memory merge share, so both give
the same bits."""

from __future__ import annotations

import torch


def add_scaled(
    w: torch.Tensor, idx: torch.Tensor | None, values: torch.Tensor, scale: float
) -> None:
    """w += scale · τ on a flat fp32 piece of a tensor: the one merge step that the checkpoint
    writer and the in-memory merge (`merging.live`) share, so both give the same bits.

    `idx` holds the flat indices of the kept entries of τ within the piece (None: `values` is
    dense). Only kept entries change: w + s·0 would equal w anyway, and index_add_ is ~2x faster
    than numpy's scatter. `values` is left as it is (`alpha` scales on the fly), so stored
    vectors are used without a copy.
    """
    if idx is None:
        w.add_(values, alpha=scale)
    else:
        w.index_add_(0, idx, values, alpha=scale)
