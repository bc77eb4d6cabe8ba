"""Params of the `evaluate` and `compare` stages (`params.evaluate`, `params.compare`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvaluateParams(BaseModel):
    """Greedy evaluation of one checkpoint on GSM8K test and the arithmetic probes.

    Device, dtype and trust_remote_code come from the `runtime` section.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    models: list[Literal["pretrain", "sft_tulu", "sft_gsm8k"]] = Field(
        default_factory=lambda: ["pretrain", "sft_tulu", "sft_gsm8k"],
        min_length=1,
        description="checkpoints evaluated for every condition and seed (the evaluate matrix)",
    )
    max_new_tokens: int = Field(256, ge=1, le=8192, description="response budget for GSM8K")
    probes_max_new_tokens: int | None = Field(
        None, ge=1, le=8192, description="response budget for probes (None: max_new_tokens)"
    )
    batch_size: int = Field(32, ge=1, le=4096, description="prompts per generate call")
    gsm8k_limit: int | None = Field(None, ge=1, description="first N test questions (None: all)")
    probes: bool = Field(True, description="also evaluate the arithmetic probes")
    probes_limit: int | None = Field(None, ge=1, description="first N probes (None: all)")

    @property
    def effective_probes_max_new_tokens(self) -> int:
        return self.probes_max_new_tokens or self.max_new_tokens


class CompareParams(BaseModel):
    """Paired statistics of the baseline vs mul_tokens comparison."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    n_bootstrap: int = Field(10_000, ge=100, le=1_000_000, description="bootstrap resamples")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    seed: int = Field(0, ge=0, description="seed of the bootstrap resampling")
