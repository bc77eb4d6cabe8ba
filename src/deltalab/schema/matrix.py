"""The experiment matrix: the conditions (`Condition`) and the delta-track members
(`DeltaTrackParams`, a subset of conditions x seeds; checked against them in `deltalab.config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deltalab.schema.base import NonNegInt, Section

Condition = Literal["baseline", "mul_tokens"]


class DeltaTrackParams(Section):
    conditions: list[Condition] = Field(default_factory=lambda: ["baseline"], min_length=1)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)
