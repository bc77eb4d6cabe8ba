"""Typed schema of params.yaml: one pydantic model per section, validated before any work.

Every stage calls `load_params()`. An unknown key, a wrong type or an out-of-range value raises a
`ConfigError` naming the file, the key path and the bad value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.errors import ConfigError
from deltalab.evaluation.params import BehaviorParams, CompareParams, EvaluateParams
from deltalab.masks.params import MasksParams
from deltalab.masks.params import Method as MaskMethod
from deltalab.search.params import (
    DifficultyParams,
    MergeParams,
    SampleQueriesParams,
    SearchParams,
    TaskVectorsParams,
)

Condition = Literal["baseline", "mul_tokens"]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
LearningRate = Annotated[float, Field(gt=0.0, lt=1.0)]


class Section(BaseModel):
    """Strict: unknown keys and wrong types are errors, never silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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


class TrainParams(Section):
    """Hyperparameters shared by every training stage."""

    max_steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: LearningRate = 1.0e-3
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Ratio = 0.05
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    eval_steps: PositiveInt | None = 50  # None: no periodic evaluation
    logging_steps: PositiveInt = 10


class SequenceTrainParams(TrainParams):
    """Stages that train on whole token sequences of at most `max_length` tokens."""

    max_length: PositiveInt = 256


class PretrainParams(SequenceTrainParams):
    # A real profile imports an existing checkpoint (hub id or local path) instead of training.
    import_from: str | None = None
    revision: str | None = None


class SFTParams(SequenceTrainParams):
    learning_rate: LearningRate = 5.0e-4
    max_train_samples: PositiveInt | None = None


class SFTGsm8kParams(SFTParams):
    # Share of stage-1 (Tulu) conversations mixed into GSM8K SFT, relative to the GSM8K rows:
    # replay keeps general instruction following from being overwritten by one answer format.
    replay_tulu_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Share of the train split held out for validation (the test split stays unseen).
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    stop_eval_questions: PositiveInt = 100
    stop_eval_max_new_tokens: PositiveInt = 128
    stop_eval_batch_size: PositiveInt = 32


class DPOParams(SequenceTrainParams):
    """DPO from sft_gsm8k on the preference pairs; the reference model is the frozen parent."""

    learning_rate: LearningRate = 5.0e-5
    beta: Annotated[float, Field(gt=0.0)] = 0.1
    loss_type: Literal["sigmoid", "sigmoid_norm", "ipo", "hinge", "robust"] = "sigmoid"
    # Weight of an added NLL loss on the chosen responses (RPO); 0 is plain DPO. Keeps the chosen
    # likelihood from falling along with the rejected one.
    sft_loss_weight: Annotated[float, Field(ge=0.0)] = 0.0
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    max_train_samples: PositiveInt | None = None


class MaskedDPOParams(DPOParams):
    """DPO from sft_gsm8k that updates only the entries of one mask (masked AdamW)."""

    mask: MaskMethod = "momentum"
    control: bool = Field(
        True, description="also train with the random mask of the same density (masked_dpo_random)"
    )


class RLVRParams(TrainParams):
    """GRPO from sft_tulu with a verifiable reward (extracted answer == gold number).

    `batch_size` counts completions per step: `batch_size / num_generations` prompts per step.
    """

    learning_rate: LearningRate = 1.0e-4
    num_generations: Annotated[int, Field(ge=2)] = 16
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8
    max_completion_length: PositiveInt = 64
    beta: Annotated[float, Field(ge=0.0)] = 0.02  # KL coefficient (0: no reference model)
    test_size: PositiveInt = 200  # prompts held out (greedy accuracy vs the parent)
    eval_batch_size: PositiveInt = 128

    @model_validator(mode="after")
    def _groups_fill_batches(self) -> RLVRParams:
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"rlvr.batch_size ({self.batch_size}) must be a multiple of rlvr.num_generations "
                f"({self.num_generations}): each step samples whole groups"
            )
        return self


class DeltaTrackParams(Section):
    conditions: list[Condition] = Field(default_factory=lambda: ["baseline"], min_length=1)
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    torch_threads: NonNegInt = 0  # 0 = torch's default
    trust_remote_code: bool = False


class _CoreParams(Section):
    conditions: list[Condition] = Field(
        default_factory=lambda: ["baseline", "mul_tokens"], min_length=1
    )
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0], min_length=1)
    data: DataParams = DataParams()
    tokenizer: TokenizerParams = TokenizerParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    sft_tulu: SFTParams = SFTParams()
    sft_gsm8k: SFTGsm8kParams = SFTGsm8kParams()
    dpo: DPOParams = DPOParams()
    masked_dpo: MaskedDPOParams = MaskedDPOParams()
    rlvr: RLVRParams = RLVRParams()
    delta_track: DeltaTrackParams = DeltaTrackParams()
    runtime: RuntimeParams = RuntimeParams()

    @model_validator(mode="after")
    def _consistent(self) -> _CoreParams:
        for name, values in (("conditions", self.conditions), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values}")
        sections = {"pretrain": self.pretrain, "sft_tulu": self.sft_tulu}
        sections |= {"sft_gsm8k": self.sft_gsm8k, "dpo": self.dpo, "masked_dpo": self.masked_dpo}
        for name, section in sections.items():
            if section.max_length > self.model.n_positions:
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
        return self


class Params(_CoreParams):
    """The whole params.yaml. Domain packages keep their own sections next to their code."""

    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()
    behavior: BehaviorParams = BehaviorParams()
    analyze_deltas: AnalyzeDeltasParams = AnalyzeDeltasParams()
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
        return self


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
