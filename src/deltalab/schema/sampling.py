"""`SamplingParams`: how sampled responses are drawn, for every section that samples (`behavior`,
`difficulty`, `search`) and for `deltalab sample`.

A subclass names its number of samples per prompt its own way (`samples`, `votes`) and returns it
from `num_samples`; it may narrow the ranges below by redeclaring a field. `sampling_kwargs()` is
the one way these fields reach `evaluation.sampling.generate_samples`.
"""

from __future__ import annotations

from pydantic import Field

from deltalab.schema.base import Section


class SamplingParams(Section):
    """Temperature / top-p sampling of `max_new_tokens` tokens, `batch_size` sequences at once."""

    temperature: float = Field(
        1.0, gt=0.0, le=10.0, description="sampling temperature (1.0: each model's distribution)"
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1.0: off)")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="response budget")
    batch_size: int = Field(
        128, ge=1, le=8192, description="sequences per forward pass (prompts x samples)"
    )
    seed: int = Field(0, ge=0, description="seed of the sampled answers (same for every model)")

    @property
    def num_samples(self) -> int:
        """Sampled responses per prompt (the subclass's own field)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many samples it draws")

    def sampling_kwargs(self) -> dict[str, int | float]:
        """The keyword arguments of `generate_samples` this section sets."""
        return {
            "n": self.num_samples,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }
