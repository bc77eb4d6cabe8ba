"""Parameters of the delta analysis (`analyze_deltas` in params.yaml, `deltalab analyze` flags)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnalyzeDeltasParams(BaseModel):
    """How weight deltas are measured; every field has a default that suits small and 8B models."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[tuple[str, str]] = Field(
        default=[("pretrain", "sft_tulu"), ("sft_tulu", "sft_gsm8k")],
        description="(base, finetuned) checkpoint names of the pipeline; deltas that share a "
        "base are compared with each other (cosine, sign agreement) automatically",
    )
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

    @field_validator("pairs")
    @classmethod
    def _distinct(cls, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for base, finetuned in pairs:
            if base == finetuned:
                raise ValueError(f"pair ({base}, {finetuned}) compares a checkpoint with itself")
        return pairs
