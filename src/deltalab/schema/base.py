"""The strict base of every params section, and the value types sections share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
LearningRate = Annotated[float, Field(gt=0.0, lt=1.0)]

# YAML has no tuples: a pair is written as a two-item list. Lax for the tuple alone (a list is
# taken and its length checked); its items stay strict strings.
StrPair = Annotated[tuple[str, str], Strict(False)]


class Section(BaseModel):
    """Strict: unknown keys and wrong types are errors, never silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
