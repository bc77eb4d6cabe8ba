"""Params of the DoTS track: `task_vectors`, `difficulty`, `sample_queries`, `search`, `merge`."""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Literal

from pydantic import Field, field_validator, model_validator

from deltalab.merging.method_spec import (
    METHOD_NAMES,
    NORMALIZE_DEFAULT,
    RANDOM,
    READS,
    MethodParams,
)
from deltalab.merging.method_spec import check as check_method
from deltalab.schema.base import Section
from deltalab.schema.sampling import SamplingParams
from deltalab.schema.stats import BootstrapParams

VECTORS = ("sft", "rlvr")  # τ_sft = sft_gsm8k − sft_tulu, τ_rlvr = rlvr − sft_tulu
SEARCHABLE = Literal["density", "gamma", "epsilon"]  # a method's float parameters


class TaskVectorsParams(Section):
    """Sparse task vectors of the SFT and RLVR models over their common base (sft_tulu)."""

    top_ratio: float | dict[Literal["sft", "rlvr"], float] = Field(
        0.3,
        description="share of each tensor's entries kept (exact top-k by |τ|); 1.0 = dense; "
        "or one ratio per vector, e.g. {sft: 0.3, rlvr: 0.1}",
    )
    rescale: Literal["none", "tensor", "global"] = Field(
        "none",
        description="norm-preserving rescale of the kept entries: per tensor ‖τ‖/‖τ_k‖, one "
        "global factor, or none",
    )
    values_dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("top_ratio")
    @classmethod
    def _ratios(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        ratios = value if isinstance(value, dict) else {"": value}
        for name, ratio in ratios.items():
            if not (isinstance(ratio, int | float) and 0.0 < ratio <= 1.0):
                where = f"[{name}]" if name else ""
                raise ValueError(f"top_ratio{where} must be in (0, 1], got {ratio!r}")
        if isinstance(value, dict) and set(value) != set(VECTORS):
            raise ValueError(f"top_ratio per vector needs exactly the keys {list(VECTORS)}")
        return value

    def ratio(self, vector: str) -> float:
        return float(self.top_ratio[vector] if isinstance(self.top_ratio, dict) else self.top_ratio)


class VotingParams(SamplingParams):
    """`votes` sampled answers per query; consistency = share of the most common answer.

    `top_p`, `max_new_tokens`, `batch_size` and `seed` (the same for every model) come from
    `SamplingParams`."""

    votes: int = Field(7, ge=2, le=256, description="sampled answers per query")
    temperature: float = Field(0.8, gt=0.0, le=2.0)

    @property
    def num_samples(self) -> int:
        return self.votes


class DifficultyParams(VotingParams):
    """Difficulty of each query of the search pool under each sparse vector alone (scale 1)."""

    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="queries with difficulty above this are dropped"
    )
    pool_limit: int | None = Field(None, ge=1, description="first N pool queries (null: all)")


class SampleQueriesParams(Section):
    per_group: int = Field(8, ge=1, description="queries sampled from each of easy and hard")
    seed: int = Field(0, ge=0)


class SearchParams(VotingParams):
    """Multi-objective search over (scale_sft, scale_rlvr): consistency up, perplexity down."""

    n_trials: int = Field(100, ge=1, le=100_000, description="completed trials of the study")
    population_size: int = Field(20, ge=2, description="NSGA-II population")
    scale_sft: list[float] = Field(
        default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2, description="[low, high]"
    )
    scale_rlvr: list[float] = Field(
        default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2, description="[low, high]"
    )
    select: Literal["knee", "max_consistency", "min_perplexity"] = Field(
        "knee",
        description="which Pareto trial becomes the merge: knee = closest to the ideal point "
        "after scaling each objective to [0, 1] over all trials",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage: null = a journal file under .deltalab/studies/, a path "
        "ending in .log/.journal, or an RDB URL (postgresql://, mysql://, sqlite:///)",
    )
    heartbeat: int = Field(
        30,
        ge=1,
        le=3600,
        description="RDB storage: seconds between a worker's heartbeats; a trial without one "
        "for 4x this is stale (its worker died) and is re-queued",
    )
    ppl_batch_size: int = Field(64, ge=1, le=8192)
    method_ranges: dict[Literal[SEARCHABLE], list[float]] = Field(
        default_factory=dict,
        description="parameters of merge.method searched beside the scales, each [low, high], "
        "e.g. {density: [0.1, 0.9]} for ties; empty: the method's params as set in merge",
    )

    @field_validator("scale_sft", "scale_rlvr")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        return _finite_range(value)

    @field_validator("method_ranges")
    @classmethod
    def _method_ranges(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, bounds in value.items():
            if len(bounds) != 2:
                raise ValueError(f"{name}: expected [low, high], got {bounds}")
            try:
                _finite_range(bounds)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value


def _finite_range(value: list[float]) -> list[float]:
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"expected a finite range [low, high] with low < high, got {value}")
    return value


def trial_method(search: SearchParams, method: str, fixed: MethodParams) -> dict | None:
    """What every search trial merges with, for the study's identity and its workers: the merged
    checkpoint's `method` with its `fixed` parameters and the searched ranges; None for task
    arithmetic over the scales alone (the default, whose studies predate the methods)."""
    if method == "task_arithmetic" and not search.method_ranges:
        return None
    return {"name": method, "params": asdict(fixed), "ranges": dict(search.method_ranges)}


def check_method_ranges(search: SearchParams, merge: MergeParams) -> None:
    """Each searched parameter is one `merge.method` reads, valid at both ends of its range."""
    reads = READS[merge.method]
    for name, bounds in search.method_ranges.items():
        key = f"search.method_ranges.{name}"
        if name not in reads:
            raise ValueError(
                f"{key}: merge.method {merge.method} does not read {name} "
                f"(it reads: {', '.join(reads) or 'nothing'})"
            )
        for value in bounds:
            try:
                check_method(merge.method, replace(merge.method_params(), **{name: value}))
            except ValueError as exc:
                raise ValueError(f"{key}={bounds}: {exc}") from None


class MergeParams(BootstrapParams):
    """The merged checkpoint: the search's chosen point; a scale set here replaces its value.

    Its evaluation against the unmerged models is bootstrapped (`BootstrapParams`)."""

    scale_sft: float | None = None
    scale_rlvr: float | None = None
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None, description="output dtype of float tensors (null: the base's)"
    )
    method: str = Field(
        "task_arithmetic", description="how the merged checkpoint combines the vectors"
    )
    density: float = Field(1.0, description="share each vector keeps (ties, dare, della, ...)")
    gamma: float = Field(0.01, description="breadcrumbs: share of outliers dropped")
    epsilon: float = Field(0.15, description="della: keep-probability spread; ram: |τ| floor")
    normalize: bool = Field(True, description="TIES-style: divide by the agreeing scales")
    method_seed: int = Field(0, ge=0, description="dare, della: the seed of their drops")
    references: list[str] = Field(
        default_factory=list,
        description="methods also evaluated at scales (1, 1) at the vectors' sparsity",
    )

    @model_validator(mode="after")
    def _finite(self) -> MergeParams:
        for name in ("scale_sft", "scale_rlvr"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        try:
            check_method(self.method, self.method_params())
        except ValueError as exc:
            raise ValueError(f"method: {exc}") from None
        for i, name in enumerate(self.references):
            if name not in METHOD_NAMES:
                raise ValueError(
                    f"references.{i}: unknown merge method {name!r} "
                    f"(one of {', '.join(METHOD_NAMES)})"
                )
        return self

    def method_params(self) -> MethodParams:
        """The parameters of `method` (for the written merged checkpoint)."""
        return MethodParams(
            density=self.density, gamma=self.gamma, epsilon=self.epsilon,
            normalize=self.normalize, seed=self.method_seed,
        )  # fmt: skip

    def reference_params(self, name: str, sparsity: float) -> MethodParams:
        """A reference method at the task vectors' sparsity: a seeded-drop method drops to
        `sparsity` of the dense vectors; the others run on the sparse vectors as stored (their
        exact top-k is TIES's trim), keeping every entry; TIES-style normalization as mergekit."""
        return MethodParams(
            density=sparsity if name in RANDOM else 1.0,
            epsilon=min(self.epsilon, sparsity / 2, (1 - sparsity) / 2) if "della" in name
            else 1e-5 if name == "ram" else self.epsilon,
            normalize=NORMALIZE_DEFAULT.get(name, True), gamma=0.0, seed=self.method_seed,
        )  # fmt: skip

    def overrides(self) -> dict[str, float]:
        """The scales set here (each replaces the search's choice for its vector)."""
        return {
            name: float(value)
            for name in ("scale_sft", "scale_rlvr")
            if (value := getattr(self, name)) is not None
        }
