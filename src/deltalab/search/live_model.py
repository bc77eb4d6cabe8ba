"""The DoTS track's working set: the base loaded once in a generation engine, its sparse vectors,
and a LiveMerge that sets the engine's weights for any scales.

With the Hugging Face engine the merge writes straight into the model's parameters. With vLLM
the merged tensors are built in buffers on the GPU and loaded into the running engine
(`Engine.load_weights`): no checkpoint is written and the engine is never restarted per trial.
Either way every trial starts from the same master copy of the base, so trials never drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from deltalab.errors import CheckpointError
from deltalab.evaluation.engine import Engine, HFEngine
from deltalab.merging.live import LiveMerge
from deltalab.merging.method_spec import MethodParams
from deltalab.merging.vectors import TaskVector
from deltalab.schema.runtime import RuntimeParams
from deltalab.tensors.reader import Checkpoint


@dataclass
class LiveModel:
    engine: Engine
    base: Checkpoint
    vectors: list[TaskVector]
    live: LiveMerge
    targets: dict[str, torch.Tensor] | None = None  # vLLM: the merged weights it loads

    def apply(self, scales: Sequence[float], values: Mapping[str, float] | None = None) -> None:
        """Set the engine's weights to the merge at `scales` (the written merge's bits); `values`
        replace some of the method's parameters for this merge."""
        self.live.apply(scales, values)
        if self.targets is not None:
            self.engine.load_weights(self.targets.items())

    @property
    def model(self):
        """The Hugging Face model (HF engine only)."""
        return self.engine.model

    @property
    def tokenizer(self):
        return self.engine.tokenizer


class _Buffers:
    """What LiveMerge writes into when no torch model holds the weights (vLLM)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def state_dict(self, keep_vars: bool = False) -> dict[str, torch.Tensor]:
        return self.tensors


def open_live_model(
    base_dir: str | os.PathLike,
    vector_files: Sequence[str | os.PathLike],
    runtime: RuntimeParams | None = None,
    dtype: str | None = None,
    method: str = "task_arithmetic",
    method_params: MethodParams | None = None,
) -> LiveModel:
    """Load the base checkpoint in `runtime.engine` on `runtime`'s device (bf16 on CUDA if it
    says so, else `dtype` or fp32) and attach the vectors, checked against it before any math,
    merged by `method` (`merging.methods`)."""
    from deltalab.evaluation.engine import open_engine
    from deltalab.models import runtime_dtype

    for path in vector_files:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such task vector file (run the task_vectors stage)")
    vectors = [TaskVector(p) for p in vector_files]
    base = Checkpoint(base_dir)
    for vector in vectors:  # names and shapes: fail before the model is loaded
        vector.check_base(base)
    runtime = runtime or RuntimeParams(device="cpu")
    load_dtype = runtime_dtype(runtime, fallback=dtype or "float32")
    engine = open_engine(
        base_dir, runtime.engine, device=runtime.device, dtype=load_dtype,
        trust_remote_code=runtime.trust_remote_code,
    )  # fmt: skip
    live, targets = live_merge(engine, base, vectors, load_dtype, method=method,
                               method_params=method_params)  # fmt: skip
    return LiveModel(engine, base, vectors, live, targets)


def live_merge(
    engine: Engine,
    base: Checkpoint,
    vectors: Sequence[TaskVector],
    dtype: str = "bfloat16",
    device: str | None = None,
    method: str = "task_arithmetic",
    method_params: MethodParams | None = None,
) -> tuple[LiveMerge, dict[str, torch.Tensor] | None]:
    """A LiveMerge that writes into the HF engine's parameters, or (any other engine) into
    `dtype` buffers on `device` (default: the GPU), returned beside it for
    `Engine.load_weights` after each apply."""
    if isinstance(engine, HFEngine):
        return LiveMerge(engine.model, base, vectors, method=method,
                         method_params=method_params), None  # fmt: skip
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    touched = dict.fromkeys(name for v in vectors for name in v.entries)
    targets = {
        name: torch.empty(base.info(name).shape, dtype=getattr(torch, dtype), device=device)
        for name in touched
    }
    live = LiveMerge(_Buffers(targets), base, vectors, method=method, method_params=method_params)
    return live, targets
