"""RAM, reinforced agent merging (for sparse RL task vectors): an entry that only one vector
changes (|τ| > epsilon) keeps that vector's scaled value whole; an entry several change gets
their mean. Averaging everything would halve every update that only one RL run made."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import columns, scale_column


def combine(taus, scales, params):
    w = scale_column(taus, scales)
    out = torch.empty(taus.shape[1], dtype=taus.dtype, device=taus.device)
    for start, stop in columns(taus.shape[1], taus.device):
        x = taus[:, start:stop]
        moved = x.abs() > params.epsilon
        count = moved.sum(0)
        total = (x * w * moved).sum(0)
        out[start:stop] = torch.where(count > 1, total / count.clamp(min=1), total)
    return out
