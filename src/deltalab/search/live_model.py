"""The DoTS track's working set: the base model loaded once, its sparse vectors, a LiveMerge."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deltalab.errors import CheckpointError
from deltalab.merging.live import LiveMerge
from deltalab.merging.vectors import TaskVector
from deltalab.schema.runtime import RuntimeParams
from deltalab.tensors.reader import Checkpoint


@dataclass
class LiveModel:
    model: object
    tokenizer: object
    base: Checkpoint
    vectors: list[TaskVector]
    live: LiveMerge


def open_live_model(
    base_dir: str | os.PathLike,
    vector_files: Sequence[str | os.PathLike],
    runtime: RuntimeParams | None = None,
    dtype: str | None = None,
) -> LiveModel:
    """Load the base checkpoint on `runtime`'s device (bf16 on CUDA if it says so, else `dtype`
    or fp32) and attach the vectors, checked against it before any math."""
    from deltalab.models import load_causal_lm, runtime_dtype

    for path in vector_files:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such task vector file (run the task_vectors stage)")
    vectors = [TaskVector(p) for p in vector_files]
    base = Checkpoint(base_dir)
    for vector in vectors:  # names and shapes: fail before the model is loaded
        vector.check_base(base)
    runtime = runtime or RuntimeParams(device="cpu")
    model, tokenizer = load_causal_lm(
        base_dir,
        device=runtime.device,
        dtype=runtime_dtype(runtime, fallback=dtype or "float32"),
        trust_remote_code=runtime.trust_remote_code,
    )
    return LiveModel(model, tokenizer, base, vectors, LiveMerge(model, base, vectors))
