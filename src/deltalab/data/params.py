"""The `data` section: synthetic sizes, and the pinned hub datasets of real profiles."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deltalab.schema.base import NonNegInt, PositiveInt, Section


class HubDataset(Section):
    name: str
    revision: str = Field(min_length=1, description="pinned commit or tag; required for hub data")
    config: str | None = None
    split: str = "train"
    limit: PositiveInt | None = None


class SyntheticSizes(Section):
    corpus_documents: PositiveInt = 6000
    tulu_train: PositiveInt = 2000
    tulu_val: PositiveInt = 200
    gsm8k_train: PositiveInt = 2000
    gsm8k_test: PositiveInt = 200
    prefs: PositiveInt = 500
    rlvr: PositiveInt = 500
    search: PositiveInt = 200  # the DoTS query pool: no stage trains on it, no evaluation uses it


class DataParams(Section):
    source: Literal["synthetic", "hub"] = "synthetic"
    seed: NonNegInt = 1234
    sizes: SyntheticSizes = SyntheticSizes()
    # Hub profiles name datasets with pinned revisions; the synthetic generator still provides the
    # corpus, probes, preference pairs and RLVR prompts unless a hub source is given for them.
    tulu: HubDataset | None = None
    tulu_val_size: PositiveInt = 1000
    gsm8k: HubDataset | None = None

    @model_validator(mode="after")
    def _hub_needs_datasets(self) -> DataParams:
        if self.source == "hub" and (self.tulu is None or self.gsm8k is None):
            raise ValueError("data.source=hub needs data.tulu and data.gsm8k")
        return self
