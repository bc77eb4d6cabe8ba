"""The `data` section: synthetic sizes, and the pinned hub datasets of real profiles."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deltalab.schema.base import NonNegInt, PositiveInt, Section
from deltalab.schema.pinning import check_revision, unpinned_revision


class HubDataset(Section):
    name: str = Field(description="hub dataset id, or a local directory in the hub layout")
    revision: str | None = Field(
        None, description="hub ids: the 40-hex commit (null: not yet pinned, refused at run time)"
    )
    config: str | None = None
    split: str = "train"
    limit: PositiveInt | None = None
    columns: dict[str, str] | None = Field(
        None, description="our column -> the dataset's (e.g. question: problem); default same"
    )

    @model_validator(mode="after")
    def _revision(self) -> HubDataset:
        check_revision(self.name, self.revision)
        return self

    def unpinned(self) -> str | None:
        return unpinned_revision(self.name, self.revision)


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
    tulu: HubDataset | None = None  # hub: the chat SFT mixture (unset: synthetic)
    tulu_val_size: PositiveInt = 1000
    gsm8k: HubDataset | None = None  # hub: train and test splits of the GSM8K format
    # hub: preference pairs as message lists (chosen / rejected conversations, the prompt the
    # shared user turn), e.g. trl-lib/ultrafeedback_binarized (unset: synthetic pairs)
    prefs: HubDataset | None = None
    rlvr_prompts: Literal["synthetic", "gsm8k"] = "synthetic"  # GRPO prompts: GSM8K train with gold
    # hub: the DoTS query pool from a math set no stage trains on or evaluates (question and
    # answer columns, mapped by `columns`); unset: carved off the end of GSM8K train
    search_pool: HubDataset | None = None

    @model_validator(mode="after")
    def _hub_needs_datasets(self) -> DataParams:
        if self.source == "hub" and self.gsm8k is None:
            raise ValueError("data.source=hub needs data.gsm8k (evaluation reads its test split)")
        hub_only = [k for k in ("tulu", "gsm8k", "prefs", "search_pool") if getattr(self, k)]
        if self.rlvr_prompts == "gsm8k":
            hub_only.append("rlvr_prompts")
        if self.source == "synthetic" and hub_only:
            raise ValueError(f"data.{hub_only[0]}: hub datasets need data.source=hub")
        return self
