"""The `model` (architecture of the trained model) and `tokenizer` sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deltalab.schema.base import PositiveInt, Ratio, Section


class TokenizerParams(Section):
    source: Literal["train", "hub"] = "train"
    vocab_size: Annotated[int, Field(ge=300, le=200_000)] = 2048
    hub_id: str | None = None
    revision: str | None = None
    pad_to_multiple_of: PositiveInt = 64

    @model_validator(mode="after")
    def _hub_needs_id(self) -> TokenizerParams:
        if self.source == "hub" and not (self.hub_id and self.revision):
            raise ValueError("tokenizer.source=hub needs tokenizer.hub_id and tokenizer.revision")
        return self


class ModelParams(Section):
    n_layer: PositiveInt = 4
    n_head: PositiveInt = 4
    n_embd: PositiveInt = 256
    n_positions: PositiveInt = 256
    dropout: Ratio = 0.0

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head")
        return self
