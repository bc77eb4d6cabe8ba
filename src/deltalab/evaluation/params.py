"""Params of the `evaluate`, `compare` and `behavior` stages (`params.evaluate`, `params.compare`,
`params.behavior`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    track_models: list[Literal["rlvr", "dpo", "merged", "masked_dpo", "masked_dpo_random"]] = Field(
        default_factory=lambda: ["rlvr", "dpo"],
        min_length=1,
        description="delta-track checkpoints evaluated for delta_track.conditions × "
        "delta_track.seeds (the evaluate_track matrix)",
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


BehaviorModel = Literal[
    "sft_tulu", "sft_gsm8k", "rlvr", "dpo", "merged", "masked_dpo", "masked_dpo_random"
]


class BehaviorParams(BaseModel):
    """Behavior of the post-trained checkpoints of one (condition, seed) on held-out GSM8K.

    Greedy accuracy, pass@k from `samples` sampled answers per question, diversity, confidence and
    length, and paired comparisons (`pairs`: [treatment, reference]). Device, dtype and
    trust_remote_code come from the `runtime` section.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    models: list[BehaviorModel] = Field(
        default_factory=lambda: ["sft_tulu", "sft_gsm8k", "rlvr", "dpo"],
        min_length=1,
        description="checkpoints compared (models/<cond>/seed<seed>/<model>/)",
    )
    pairs: list[list[BehaviorModel]] = Field(
        default_factory=lambda: [
            ["rlvr", "sft_tulu"],
            ["sft_gsm8k", "sft_tulu"],
            ["dpo", "sft_gsm8k"],
            ["rlvr", "sft_gsm8k"],
        ],
        description="paired comparisons [treatment, reference]; both must be in models",
    )
    questions: int | None = Field(100, ge=1, description="first N GSM8K test questions (None: all)")
    samples: int = Field(8, ge=1, le=1024, description="sampled answers per question (n of pass@k)")
    temperature: float = Field(
        1.0, gt=0.0, le=10.0, description="sampling temperature (1.0: each model's distribution)"
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1.0: off)")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="response budget")
    batch_size: int = Field(
        128, ge=1, le=4096, description="sequences per forward pass (prompts x samples)"
    )
    n_bootstrap: int = Field(10_000, ge=100, le=1_000_000, description="bootstrap resamples")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    seed: int = Field(0, ge=0, description="seed of the sampling and of the bootstrap")

    @model_validator(mode="after")
    def _consistent(self) -> BehaviorParams:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models has duplicates: {self.models}")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"pair {pair} must name two different models")
            missing = [m for m in pair if m not in self.models]
            if missing:
                raise ValueError(f"pair {pair}: {', '.join(missing)} not in models")
        return self
