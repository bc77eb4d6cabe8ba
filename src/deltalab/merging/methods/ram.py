"""RAM, reinforced agent merging (for sparse RL task vectors): an entry that only one vector
changes (|τ| > epsilon) keeps that vector's scaled value whole; an entry several change gets
their mean. Averaging everything would halve every update that only one RL run made."""

from __future__ import annotations

import torch

from deltalab.merging.methods.common import weighted


def combine(taus, scales, params):
    scaled = weighted(taus, scales)
    moved = taus.abs() > params.epsilon
    count = moved.sum(0)
    total = (scaled * moved).sum(0)
    return torch.where(count > 1, total / count.clamp(min=1), total)
