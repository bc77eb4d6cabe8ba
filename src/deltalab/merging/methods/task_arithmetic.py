"""Task arithmetic: Σ scaleᵢ · τᵢ (the merge the pipeline has always written; the sparse vectors
are already top-k per tensor). Nothing to prepare; the combination is `common.summed`."""

from __future__ import annotations

from deltalab.merging.methods.common import summed

combine = summed
