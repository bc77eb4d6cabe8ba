"""Parameters of the delta analysis (`analyze_deltas` in params.yaml, `deltalab analyze` flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from deltalab.schema.base import Section, StrPair

Method = Literal["sft", "dpo", "rlvr"]

DEFAULT_METHODS: dict[str, Method] = {
    "sft": "sft",
    "sft_tulu": "sft",
    "sft_gsm8k": "sft",
    "dpo": "dpo",
    "masked_dpo": "dpo",
    "rl": "rlvr",
    "rlvr": "rlvr",
}


class AnalyzeDeltasParams(Section):
    """How weight deltas are measured; every field has a default that suits small and 8B models."""

    pairs: list[StrPair] = Field(
        default=[
            ("pretrain", "sft_tulu"),
            ("sft_tulu", "sft_gsm8k"),
            ("sft_tulu", "rlvr"),
            ("sft_gsm8k", "dpo"),
        ],
        description="(base, finetuned) checkpoint names of the pipeline; deltas that share a "
        "base are compared with each other (cosine, sign agreement) automatically",
    )
    contrast: list[StrPair] = Field(
        default=[("sft_gsm8k", "rlvr")],
        description="(a, b) delta labels of one base compared head-to-head with the published "
        "SFT-vs-RLVR numbers (a: the SFT-like delta, b: the RL-like one; ‖τ_a‖/‖τ_b‖ is "
        "reported); every label must be a delta of `pairs` (checked when the stage starts)",
    )
    methods: dict[str, Method] = Field(
        default_factory=lambda: dict(DEFAULT_METHODS),
        description="training method (sft, dpo, rlvr) of each delta label or finetuned "
        "checkpoint name, for the published per-method numbers; unlisted deltas get none",
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

    @field_validator("contrast")
    @classmethod
    def _distinct_contrast(cls, contrast: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for a, b in contrast:
            if a == b:
                raise ValueError(f"contrast ({a}, {b}) compares a delta with itself")
        return contrast

    def deltas(self) -> list[tuple[str, str, str]]:
        """(label, base, finetuned) of each pair: the label is the finetuned name, or
        `<finetuned>_from_<base>` when that name is the finetuned side of several pairs."""
        finetuned = [ft for _, ft in self.pairs]
        return [
            (ft if finetuned.count(ft) == 1 else f"{ft}_from_{base}", base, ft)
            for base, ft in self.pairs
        ]

    def method_of(self, label: str) -> Method | None:
        """The method of a delta: its label, else the finetuned name before `_from_`."""
        return self.methods.get(label) or self.methods.get(label.split("_from_")[0])
