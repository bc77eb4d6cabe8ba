"""params.yaml as one typed object: `Params` aggregates the sections, checks what spans several
of them, and `load_params` / `parse_params` validate a whole file before any work.

The sections live in leaf modules: shared ones in `deltalab.schema`, domain ones next to their
domain (`train.params`, `data.params`, `evaluation.params`, ...). Only entry points import this
module (`deltalab.stage`, `deltalab.cli`, CLIs that load a params file; `pyproject.toml`'s
import-linter contracts enforce it). An unknown key, a wrong type or an out-of-range value raises
a `ConfigError` naming the file, the key path and the bad value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from deltalab.data.params import DataParams
from deltalab.deltas.params import AnalyzeDeltasSettings
from deltalab.errors import ConfigError
from deltalab.evaluation.params import BehaviorSettings, CompareParams, EvaluateParams
from deltalab.masks.params import MasksParams
from deltalab.schema.base import NonNegInt, Section
from deltalab.schema.matrix import Condition, DeltaTrackParams
from deltalab.schema.model import ModelParams, TokenizerParams
from deltalab.schema.runtime import RuntimeParams
from deltalab.schema.study import StudyParams
from deltalab.search.params import (
    DifficultyParams,
    MergeParams,
    SampleQueriesParams,
    SearchParams,
    TaskVectorsParams,
    check_method_ranges,
)
from deltalab.train.params import (
    DPOParams,
    MaskedDPOParams,
    PretrainParams,
    RLVRParams,
    SFTGsm8kParams,
    SFTParams,
)


class _CoreParams(Section):
    conditions: list[Condition] = Field(min_length=1)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)
    study: StudyParams
    data: DataParams = DataParams()
    tokenizer: TokenizerParams = TokenizerParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    sft_tulu: SFTParams = SFTParams()
    sft_gsm8k: SFTGsm8kParams = SFTGsm8kParams()
    dpo: DPOParams = DPOParams()
    masked_dpo: MaskedDPOParams = MaskedDPOParams()
    rlvr: RLVRParams = RLVRParams()
    delta_track: DeltaTrackParams
    runtime: RuntimeParams = RuntimeParams()

    @model_validator(mode="after")
    def _consistent(self) -> _CoreParams:
        for name, values in (("conditions", self.conditions), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values}")
        sections = {"pretrain": self.pretrain, "sft_tulu": self.sft_tulu}
        sections |= {"sft_gsm8k": self.sft_gsm8k, "dpo": self.dpo, "masked_dpo": self.masked_dpo}
        for name, section in sections.items():
            # `model` shapes what pretrain builds; an imported model brings its own context
            if self.study.made_by("pretrain") and section.max_length > self.model.n_positions:
                raise ValueError(
                    f"{name}.max_length ({section.max_length}) exceeds "
                    f"model.n_positions ({self.model.n_positions})"
                )
        for cond in self.delta_track.conditions:
            if cond not in self.conditions:
                raise ValueError(f"delta_track.conditions: {cond!r} is not in conditions")
        for seed in self.delta_track.seeds:
            if seed not in self.seeds:
                raise ValueError(f"delta_track.seeds: {seed} is not in seeds {self.seeds}")
        named = [(f"study.transforms.{c}", c) for c in self.study.transforms]
        named += [("study.compare_conditions", c) for c in self.study.compare_conditions or ()]
        for key, cond in named:
            if cond not in self.conditions:
                raise ValueError(f"{key}: {cond!r} is not in conditions {self.conditions}")
        for name, spec in self.study.checkpoints.items():
            if isinstance(spec.source, dict) and set(spec.source) != set(self.conditions):
                raise ValueError(
                    f"study.checkpoints.{name}.source: one source per condition is needed; got "
                    f"{sorted(spec.source)} for conditions {self.conditions}"
                )
        return self


class Params(_CoreParams):
    """The whole params.yaml. Domain packages keep their own sections next to their code."""

    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()
    behavior: BehaviorSettings = BehaviorSettings()
    analyze_deltas: AnalyzeDeltasSettings = AnalyzeDeltasSettings()
    task_vectors: TaskVectorsParams = TaskVectorsParams()
    difficulty: DifficultyParams = DifficultyParams()
    sample_queries: SampleQueriesParams = SampleQueriesParams()
    search: SearchParams = SearchParams()
    merge: MergeParams = MergeParams()
    masks: MasksParams = MasksParams()

    @model_validator(mode="after")
    def _merge_inside_search(self) -> Params:
        for name, value in self.merge.overrides().items():
            low, high = getattr(self.search, name)
            if not low <= value <= high:
                raise ValueError(
                    f"merge.{name}={value} is outside the searched range "
                    f"search.{name}=[{low}, {high}]"
                )
        check_method_ranges(self.search, self.merge)
        for name in self.study.made_by("masked_dpo"):
            mask = self.study.checkpoints[name].mask
            if mask not in self.masks.methods:
                raise ValueError(
                    f"study.checkpoints.{name}.mask: {mask!r} is not built (add it to "
                    f"masks.methods {self.masks.methods})"
                )
        return self

    def unpinned(self) -> list[str]:
        """`key: why` for every hub checkpoint or dataset whose revision is not yet pinned. Such
        params are valid (a profile can name candidates) but no stage runs them."""
        found = [
            f"study.checkpoints.{name}.{key}.revision: hub id {why}"
            for name, spec in self.study.checkpoints.items()
            for key, source in spec.sources().items()
            if (why := source.unpinned())
        ]
        datasets = {k: getattr(self.data, k) for k in ("tulu", "gsm8k", "prefs", "search_pool")}
        found += [
            f"data.{key}.revision: dataset {why}"
            for key, spec in datasets.items()
            if spec is not None and (why := spec.unpinned())
        ]
        return found


# PyYAML follows YAML 1.1, where `2e-4` is a string; DVC reads it as a float (YAML 1.2).
class _Yaml12Loader(yaml.SafeLoader):
    pass


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _format_errors(path: str, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} invalid param(s)"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(raw: object, source: str = "<params>") -> Params:
    """Validate params already read from YAML (None: every default); `source` names them."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Load and validate a params file (default: params.yaml in the working directory)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    try:
        raw = yaml.load(p.read_text(), Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_params(raw, str(p))
