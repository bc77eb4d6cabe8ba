"""Params of the `evaluate`, `compare` and `behavior` stages (`params.evaluate`, `params.compare`,
`params.behavior`), and of `deltalab sample` (`SampleParams`, from its flags)."""

from __future__ import annotations

from pydantic import Field, model_validator

from deltalab.schema.base import Section
from deltalab.schema.sampling import SamplingParams
from deltalab.schema.stats import BootstrapParams


class EvaluateParams(Section):
    """Greedy evaluation of one checkpoint on GSM8K test and the arithmetic probes.

    Which checkpoints: `study.evaluate` and `study.evaluate_track`. Device, dtype and
    trust_remote_code come from the `runtime` section.
    """

    max_new_tokens: int = Field(256, ge=1, le=8192, description="response budget for GSM8K")
    probes_max_new_tokens: int | None = Field(
        None, ge=1, le=8192, description="response budget for probes (None: max_new_tokens)"
    )
    batch_size: int = Field(32, ge=1, le=4096, description="prompts per generate call")
    gsm8k_limit: int | None = Field(None, ge=1, description="first N test questions (None: all)")
    probes: bool = Field(True, description="also evaluate the arithmetic probes")
    probes_limit: int | None = Field(None, ge=1, description="first N probes (None: all)")

    @property
    def effective_probes_max_new_tokens(self) -> int:
        return self.probes_max_new_tokens or self.max_new_tokens


class CompareParams(BootstrapParams):
    """Paired statistics of the compare stage (its conditions: `study.compare_conditions`)."""


class BehaviorSettings(SamplingParams, BootstrapParams):
    """How the behavior of post-trained checkpoints is measured on held-out GSM8K (the `behavior`
    section; which checkpoints and pairs: `study.behavior`).

    Greedy accuracy, pass@k from `samples` sampled answers per question, diversity, confidence and
    length, and paired comparisons. Sampling fields come from `SamplingParams`, bootstrap fields
    from `BootstrapParams`, one `seed` for both. Device, dtype and trust_remote_code come from the
    `runtime` section.
    """

    questions: int | None = Field(100, ge=1, description="first N GSM8K test questions (None: all)")
    samples: int = Field(8, ge=1, le=1024, description="sampled answers per question (n of pass@k)")
    batch_size: int = Field(
        128, ge=1, le=4096, description="sequences per forward pass (prompts x samples)"
    )
    seed: int = Field(0, ge=0, description="seed of the sampling and of the bootstrap")

    @property
    def num_samples(self) -> int:
        return self.samples


class BehaviorParams(BehaviorSettings):
    """The settings plus the checkpoints compared (labels) and the pairs [treatment, reference]."""

    models: list[str] = Field(min_length=1, description="labels of the checkpoints compared")
    pairs: list[list[str]] = Field(
        default_factory=list, description="paired comparisons [treatment, reference]"
    )

    @model_validator(mode="after")
    def _consistent(self) -> BehaviorParams:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models has duplicates: {self.models}")
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"pair {pair} must name two different models")
            missing = [m for m in pair if m not in self.models]
            if missing:
                raise ValueError(f"pair {pair}: {', '.join(missing)} not in models")
        return self


class SampleParams(SamplingParams):
    """`deltalab sample`'s flags: `samples` answers per question. Defaults are the command's; the
    bounds are `generate_samples`' own (no upper limits, unlike the params.yaml sections)."""

    samples: int = Field(1, ge=1, description="sampled answers per question")
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="sampling temperature")
    max_new_tokens: int = Field(128, ge=1, description="response budget")
    batch_size: int = Field(256, ge=1, description="sequences per forward pass")

    @property
    def num_samples(self) -> int:
        return self.samples
