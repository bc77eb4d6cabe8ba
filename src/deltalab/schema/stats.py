"""`BootstrapParams`: the resampling fields of every section that reports bootstrap intervals
(`compare`, `behavior`, `merge`)."""

from __future__ import annotations

from pydantic import Field

from deltalab.schema.base import Section


class BootstrapParams(Section):
    """Paired bootstrap: `n_bootstrap` resamples, a two-sided `confidence` interval, a seed."""

    n_bootstrap: int = Field(10_000, ge=100, le=1_000_000, description="bootstrap resamples")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    seed: int = Field(0, ge=0, description="seed of the bootstrap resampling")
