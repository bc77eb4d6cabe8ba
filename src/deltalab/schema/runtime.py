"""The `runtime` section: device, dtype and threads of every stage that runs a model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deltalab.schema.base import NonNegInt, Section


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    torch_threads: NonNegInt = 0  # 0 = torch's default
    trust_remote_code: bool = False
    # generation engine of evaluate, behavior, difficulty, search, merge: hf (any device) or
    # vllm (CUDA only, the `vllm` extra); training always runs on transformers
    engine: Literal["hf", "vllm"] = "hf"
    # training stages: processes (one per GPU; gloo ranks on a CPU machine), started by the
    # stage command itself under `launcher`; the batch sizes stay global (split across ranks)
    processes: int = Field(1, ge=1, le=1024)
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    accelerate_config: str | None = None  # `accelerate launch --config_file` (FSDP, ZeRO-3)
