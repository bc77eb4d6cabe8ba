"""Params of the `masks` stage (`params.masks`; `deltalab masks` flags mirror them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deltalab.schema.base import Section

Method = Literal["magnitude", "momentum", "fisher", "random"]


class MasksParams(Section):
    """Masks of the DPO run: which score, how dense, chosen per tensor or over all tensors."""

    methods: list[Method] = Field(
        default_factory=lambda: ["magnitude", "momentum", "fisher", "random"],
        min_length=1,
        description="magnitude: |W_dpo − W_sft_gsm8k|; momentum: |Adam exp_avg| of the DPO "
        "run; fisher: Σ per-pair squared DPO-loss gradients; random: seeded",
    )
    density: float = Field(0.05, gt=0.0, le=1.0, description="share of eligible entries kept")
    selection: Literal["tensor", "global"] = Field(
        "tensor", description="top-ρ within each tensor, or over all eligible tensors pooled"
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["embedding", "norm", "lm_head"],
        description="modules left out of every mask (names of deltas.classify: embedding, "
        "norm, lm_head, attn_q, attn_qkv, mlp_up, ...)",
    )
    fisher_samples: int = Field(64, ge=1, description="calibration pairs (DPO training split)")
    seed: int = Field(0, ge=0, description="seed of the random mask")
