"""Parameters of the delta analysis: how deltas are measured (`AnalyzeDeltasSettings`, the
`analyze_deltas` section of params.yaml) and what they are (`AnalyzeDeltasParams`: plus the
contrasted labels and each delta's method, from `study` in the pipeline or the `deltalab analyze`
flags — never guessed from a label)."""

from __future__ import annotations

from pydantic import Field, field_validator

from deltalab.schema.base import Section, StrPair
from deltalab.schema.study import Method

__all__ = ["AnalyzeDeltasParams", "AnalyzeDeltasSettings", "Method"]


class AnalyzeDeltasSettings(Section):
    """How weight deltas are measured; every field has a default that suits small and 8B models."""

    atol: float = Field(1e-5, gt=0, description="|Δ| ≤ atol counts as unchanged")
    top_ratio: float = Field(
        0.3, gt=0, le=1, description="keep ratio of the sparsified deltas (before/after metrics)"
    )
    energy_top_fraction: float = Field(
        0.01, gt=0, le=1, description="share of entries whose energy is reported (top 1%)"
    )
    rank: bool = Field(True, description="stable and effective rank of 2-D deltas")
    rank_exact_max_dim: int = Field(
        1024, ge=1, description="exact SVD when min(rows, cols) ≤ this (and it fits one chunk)"
    )
    rank_sketch_size: int = Field(
        64, ge=1, description="singular values estimated by randomized SVD on larger matrices"
    )
    rank_power_iters: int = Field(1, ge=0, le=8, description="power iterations of the sketch")
    chunk_elements: int = Field(
        2**25,
        ge=64,
        description="largest number of elements of one tensor held in fp32 at once; bigger "
        "tensors are streamed in row chunks (peak memory ≈ a few × 4 bytes × this)",
    )
    seed: int = Field(0, description="seed of the random sketches (results are deterministic)")
    include: list[str] = Field(
        default_factory=list,
        description="regexes on tensor names: only matching tensors are read (none: all), e.g. "
        "the seed study's layer filter 'layers\\.(0|15|31)\\.'",
    )
    exclude: list[str] = Field(default_factory=list, description="regexes of tensors left out")


class AnalyzeDeltasParams(AnalyzeDeltasSettings):
    """The settings plus what the deltas are: their (base, finetuned) names, contrasted labels
    and each label's method (all recorded in summary.json)."""

    pairs: list[StrPair] = Field(
        default_factory=list, description="(base, finetuned) checkpoint names of the deltas"
    )
    contrast: list[StrPair] = Field(
        default_factory=list,
        description="(a, b) delta labels of one base compared head-to-head with the published "
        "SFT-vs-RLVR numbers (a: the SFT-like delta, b: the RL-like one; ‖τ_a‖/‖τ_b‖ is "
        "reported); every label must be a delta of the analysis (checked when it starts)",
    )
    methods: dict[str, Method] = Field(
        default_factory=dict,
        description="training method (sft, dpo, rlvr) of each delta label, for the published "
        "per-method numbers; unlisted deltas get none",
    )

    @field_validator("contrast")
    @classmethod
    def _distinct_contrast(cls, contrast: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for a, b in contrast:
            if a == b:
                raise ValueError(f"contrast ({a}, {b}) compares a delta with itself")
        return contrast

    def method_of(self, label: str) -> Method | None:
        return self.methods.get(label)
