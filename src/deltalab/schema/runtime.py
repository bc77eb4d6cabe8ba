"""The `runtime` section: device, dtype and threads of every stage that runs a model."""

from __future__ import annotations

from typing import Literal

from deltalab.schema.base import NonNegInt, Section


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    torch_threads: NonNegInt = 0  # 0 = torch's default
    trust_remote_code: bool = False
    # generation engine of evaluate, behavior, difficulty, search, merge: hf (any device) or
    # vllm (CUDA only, the `vllm` extra); training always runs on transformers
    engine: Literal["hf", "vllm"] = "hf"
