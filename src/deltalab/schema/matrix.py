"""The experiment matrix: condition names (`Condition`, declared by each study) and the
delta-track members (`DeltaTrackParams`, a subset of conditions x seeds; checked against them in
`deltalab.config`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from deltalab.schema.base import NonNegInt, Section

# A condition names a directory (models/<cond>/...) and a DVC matrix item: a plain identifier.
Condition = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class DeltaTrackParams(Section):
    conditions: list[Condition] = Field(min_length=1)
    seeds: list[NonNegInt] = Field(min_length=1)
