"""Generation engines behind one interface: Hugging Face (default, any device) and vLLM (optional,
CUDA only). `evaluate`, `behavior`, `difficulty`, `search`, `merge` and `deltalab sample` ask an
`Engine`, so they get the same prompts (the checkpoint's own format), the same stopping (every EOS
id), the same seeds per (question, sample) and the same answer extraction whichever engine runs.

Samples are seeded per (question, sample) by the caller's `seed`: the HF engine draws row
uniforms (`sampling.row_uniforms`), vLLM gets `sample_seed(seed, i, j)` per request. The two
engines' random streams differ, so their samples are equal in distribution, not token for token;
greedy answers agree wherever the two kernels' logits rank the same token first.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Literal

import torch

from deltalab.evaluation.generation import Generation

EngineName = Literal["hf", "vllm"]


class Engine(ABC):
    """Greedy and sampled generation over formatted prompts, one result per prompt, in order."""

    tokenizer: object

    @abstractmethod
    def greedy(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int,
        progress: bool = False,
        desc: str = "generate",
    ) -> list[Generation]: ...

    @abstractmethod
    def sample(
        self,
        prompts: Sequence[str],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        batch_size: int,
        progress: bool = False,
        desc: str = "sample",
    ) -> list[list[Generation]]: ...

    @abstractmethod
    def confidence(
        self, prompts: Sequence[str], responses: Sequence[Sequence[int]], *, batch_size: int
    ) -> list:
        """Teacher-forced mean log-probability and entropy of each response (`Confidence`)."""

    @abstractmethod
    def prompt_perplexity(self, questions: Sequence[str], *, batch_size: int) -> float:
        """exp of the mean over questions of each formatted question's mean token NLL."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace named weights (Hugging Face checkpoint names) in place."""
        raise NotImplementedError(f"{type(self).__name__} cannot load weights in place")

    sizing: object  # what `generation._context_length` reads the context from

    def fit_new_tokens(self, prompts: Sequence[str], wanted: int) -> int:
        """`wanted` new tokens, or fewer when the longest prompt would overflow the context
        (with a warning that says so): for commands whose default budget is not the params'."""
        import sys

        from deltalab.errors import DataError
        from deltalab.evaluation.generation import _context_length

        context = _context_length(self.sizing)
        if context is None or not prompts:
            return wanted
        longest = max(
            len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        )
        if longest + wanted <= context:
            return wanted
        if longest >= context:
            raise DataError(f"a prompt has {longest} tokens; the model's context is {context}")
        print(
            f"warning: {wanted} new tokens after a {longest}-token prompt exceed the model's "
            f"context of {context} positions; capped at {context - longest}",
            file=sys.stderr,
        )
        return context - longest


class HFEngine(Engine):
    """transformers models: batched, left-padded decoding with an in-place KV cache."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.sizing = model

    def greedy(self, prompts, *, max_new_tokens, batch_size, progress=False, desc="generate"):
        from deltalab.evaluation.generation import generate_greedy

        return generate_greedy(
            self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
            batch_size=batch_size, progress=progress, desc=desc,
        )  # fmt: skip

    def sample(
        self, prompts, *, n, max_new_tokens, temperature, top_p, seed, batch_size,
        progress=False, desc="sample",
    ):  # fmt: skip
        from deltalab.evaluation.sampling import generate_samples

        return generate_samples(
            self.model, self.tokenizer, prompts, n=n, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
            progress=progress, desc=desc,
        )  # fmt: skip

    def confidence(self, prompts, responses, *, batch_size):
        from deltalab.evaluation.sampling import response_confidence

        return response_confidence(
            self.model, self.tokenizer, prompts, responses, batch_size=batch_size
        )

    def prompt_perplexity(self, questions, *, batch_size):
        from deltalab.evaluation.perplexity import prompt_perplexity

        return prompt_perplexity(self.model, self.tokenizer, questions, batch_size)

    @torch.no_grad()
    def load_weights(self, weights):
        params = self.model.state_dict(keep_vars=True)
        for name, tensor in weights:
            params[name].copy_(tensor)


def open_engine(
    checkpoint: str | os.PathLike,
    engine: EngineName = "hf",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    seed: int = 0,
) -> Engine:
    """An engine on a checkpoint directory. vLLM needs CUDA and the `vllm` extra; asking for it
    without them is an error that says so (never a silent fallback to another engine)."""
    if engine == "vllm":
        from deltalab.evaluation.vllm_engine import VLLMEngine

        return VLLMEngine(checkpoint, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed)
    from deltalab.models import load_causal_lm

    model, tokenizer = load_causal_lm(
        checkpoint, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    return HFEngine(model, tokenizer)
