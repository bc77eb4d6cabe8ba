"""Merge: W = base + Σ scaleᵢ · τᵢ in fp32 from the base, cast once, written as an HF checkpoint.

Streams one row chunk of one tensor at a time from the base and every vector; the base tensor's
sha256 is compared with the one each vector recorded, so a vector applied to the wrong base fails
(and, the output directory being atomic, nothing is written).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from deltalab import __version__
from deltalab.atomic import atomic_dir
from deltalab.errors import CheckpointError, ConfigError
from deltalab.merging.method_spec import MethodParams
from deltalab.merging.method_spec import check as check_method
from deltalab.merging.methods import combine_delta, prepare_delta
from deltalab.merging.step import add_scaled
from deltalab.merging.vectors import TaskVector
from deltalab.tensors.blocks import BLOCK, matrix_shape, row_chunks
from deltalab.tensors.format import DTYPE_NAMES, DTYPES
from deltalab.tensors.hashing import Sha256
from deltalab.tensors.reader import Buffer, Checkpoint
from deltalab.tensors.writer import CheckpointWriter, copy_aux_files

OUT_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
# A checkpoint directory's tokenizer: one of these (fast, sentencepiece, BPE files, or the config).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def parse_size(text: str) -> int:
    """'5GB', '500MB', '100KB', '1024' → bytes (decimal units, like transformers)."""
    units = {
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "B": 1,
    }
    t = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError as exc:
        raise ConfigError(f"invalid size {text!r} (e.g. 5GB, 500MB)") from exc


def check_loadable(base_dir: Path) -> None:
    """A merge writes the base's config and tokenizer beside the weights; without them the
    output would not load, so a base lacking either is refused before anything is written."""
    if not (base_dir / "config.json").is_file():
        raise CheckpointError(f"{base_dir}: no config.json: a merge onto it would not load")
    if not any((base_dir / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(
            f"{base_dir}: no tokenizer ({' or '.join(TOKENIZER_FILES)}): a merge onto it "
            "would not load"
        )


def merge(
    base: Checkpoint,
    vectors: Sequence[tuple[TaskVector, float]],
    out_dir: str | os.PathLike,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 10**9,
    chunk_elements: int = 2**25,
    progress: bool = True,
    method: str = "task_arithmetic",
    method_params: MethodParams | None = None,
) -> dict:
    """Write base + Σ scale·τ to `out_dir` (sharded safetensors, config and tokenizer of the base),
    or base + the merged delta of another `method` (`merging.methods`, one tensor at a time).

    `dtype` (bfloat16/float16/float32) overrides the base dtype of float tensors.
    """
    from tqdm.auto import tqdm

    if dtype is not None and dtype not in OUT_DTYPES:
        raise ConfigError(f"dtype must be one of {list(OUT_DTYPES)}, got {dtype!r}")
    method_params = method_params or MethodParams()
    try:
        check_method(method, method_params)
    except ValueError as exc:
        raise ConfigError(f"merge method: {exc}") from exc
    check_loadable(base.path)
    dropped: dict[str, dict[str, int]] = {}
    for vector, scale in vectors:
        if not math.isfinite(scale):
            raise ConfigError(f"{vector.path}: scale must be a finite number, got {scale}")
        vector.check_base(base)
        if rows := vector.dropped_rows():
            dropped[str(vector.path)] = rows
            print(
                f"warning: {vector.path}: the fine-tune has rows the base lacks ({rows}); the "
                "merge keeps the base's vocabulary and config, so those rows are not merged",
                file=sys.stderr,
            )
    out_code = OUT_DTYPES.get(dtype) if dtype else None
    plan = []
    for name in base.tensors:
        info = base.info(name)
        plan.append((name, out_code if out_code and info.is_float else info.dtype, info.shape))
    total = sum(info.nbytes for info in base.tensors.values())
    with atomic_dir(out_dir) as tmp:
        writer = CheckpointWriter(tmp, plan, max_shard_bytes)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="merge", disable=not progress)
        try:
            for name, out_dtype, _ in plan:
                bar.set_postfix_str(name[-40:], refresh=False)
                if method == "task_arithmetic":  # streamed in row chunks, sparse as stored
                    _merge_tensor(base, name, vectors, writer, DTYPES[out_dtype], chunk_elements)
                else:
                    _merge_tensor_method(
                        base, name, vectors, writer, DTYPES[out_dtype], method, method_params
                    )
                bar.update(base.info(name).nbytes)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        changed = out_code if out_code and out_code != base.main_dtype else None
        copy_aux_files(base.path, tmp, changed)
        info = {
            "deltalab_version": __version__,
            "base": base.source,
            "vectors": [
                {
                    "path": str(v.path),
                    "scale": s,
                    "finetuned": v.meta.get("finetuned"),
                    "top_ratio": v.top_ratio,
                    "base_sha256": v.meta.get("base_sha256"),
                }
                for v, s in vectors
            ],
            "dtype": dtype or "base",
        } | ({"dropped_rows": dropped} if dropped else {})
        if method != "task_arithmetic":
            info["method"] = {"name": method} | dataclasses.asdict(method_params)
        (tmp / "deltalab_merge.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _merge_tensor(
    base: Checkpoint,
    name: str,
    vectors: Sequence[tuple[TaskVector, float]],
    writer: CheckpointWriter,
    out_dtype: torch.dtype,
    chunk_elements: int,
) -> None:
    info = base.info(name)
    users = [(v, s) for v, s in vectors if name in v.entries]
    # blocks of ~1M elements: read, convert, add the vectors and cast while in cache
    ranges = row_chunks(*matrix_shape(info.shape), min(chunk_elements, BLOCK))
    if not info.is_float or (not users and DTYPE_NAMES[out_dtype] == info.dtype):
        for start, stop in ranges:  # copied bit for bit
            writer.write(name, base.read(name, start, stop))
        return
    hasher = Sha256()
    taus = [(v.sparse_chunks(name, ranges), s) for v, s in users]
    w_buf, out_buf = Buffer(), Buffer()  # reused chunk after chunk (fresh memory page-faults)
    for start, stop in ranges:
        raw = base.read(name, start, stop)  # fresh: it may still be hashed on the worker thread
        if users:
            hasher.update(raw)
        w = w_buf.get(4 * raw.numel()).view(torch.float32).copy_(raw)
        for chunks, scale in taus:  # fp32 throughout, one cast at the end
            idx, values = next(chunks)
            add_scaled(w, None if idx is None else torch.from_numpy(idx), values, scale)
        size = w.numel() * torch.empty((), dtype=out_dtype).element_size()
        writer.write(name, out_buf.get(size).view(out_dtype).copy_(w))
    _check_base_digest(users, name, info, hasher.hexdigest())


def merged_tensor(
    base_raw: torch.Tensor,
    taus: torch.Tensor,
    scales: Sequence[float],
    method: str,
    params: MethodParams,
    name: str,
) -> torch.Tensor:
    """base + the method's merged delta of one tensor, in fp32, from the task vectors stacked
    [m, n] in fp32 (overwritten: prepared in place). The live merge composes the same two steps,
    so a live trial and the written checkpoint hold the same bits."""
    prepared = prepare_delta(method, taus, params, key=name)
    return combine_delta(method, prepared, scales, params).add_(base_raw.reshape(-1))


def stack_dense(vectors: Sequence[TaskVector], name: str, n: int) -> torch.Tensor:
    """The dense fp32 τ of `name` in each of `vectors`, read chunk by chunk into one [m, n]
    stack (the methods' input, for the checkpoint writer and the live merge alike)."""
    stack = torch.empty(len(vectors), n, dtype=torch.float32)
    ranges = [(s, min(s + STACK_CHUNK, n)) for s in range(0, n, STACK_CHUNK)]
    for i, vector in enumerate(vectors):
        for (start, stop), chunk in zip(ranges, vector.chunks(name, ranges), strict=True):
            stack[i, start:stop] = chunk
    return stack


STACK_CHUNK = 1 << 22  # entries per read (a multiple of 8, as the packed masks need)


def _merge_tensor_method(
    base: Checkpoint,
    name: str,
    vectors: Sequence[tuple[TaskVector, float]],
    writer: CheckpointWriter,
    out_dtype: torch.dtype,
    method: str,
    params: MethodParams,
) -> None:
    """One whole tensor (top-k, ranks and sign election need all of it) through `method`."""
    info = base.info(name)
    users = [(v, s) for v, s in vectors if name in v.entries]
    raw = base.read(name)
    if not info.is_float or (not users and DTYPE_NAMES[out_dtype] == info.dtype):
        writer.write(name, raw.reshape(-1))
        return
    if users:
        hasher = Sha256()
        hasher.update(raw)
        _check_base_digest(users, name, info, hasher.hexdigest())
        w = merged_tensor(raw, stack_dense([v for v, _ in users], name, info.numel),
                          [s for _, s in users],
                          method, params, name)  # fmt: skip
    else:
        w = raw.reshape(-1).float()
    writer.write(name, w.to(out_dtype))


def _check_base_digest(users, name: str, info, digest: str) -> None:
    for vector, _ in users:
        expected = vector.entries[name]["base_sha256"]
        if expected != digest:
            raise CheckpointError(
                f"{vector.path}: tensor {name!r} was computed from a different base than "
                f"{info.path} (sha256 {expected[:12]}… ≠ {digest[:12]}…); apply it to the base "
                f"it was made from ({vector.meta.get('base')})"
            )


def load_vectors(specs: Sequence[str]) -> list[tuple[TaskVector, float]]:
    """'path.safetensors:1.2' (scale defaults to 1.0) → opened vectors with their scales."""
    out = []
    for spec in specs:
        path, scale = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep and not Path(spec).exists():
            try:
                path, scale = head, float(tail)
            except ValueError as exc:
                raise ConfigError(f"--vector {spec!r}: scale {tail!r} is not a number") from exc
        if not math.isfinite(scale):
            raise ConfigError(f"--vector {spec!r}: scale must be finite")
        out.append((TaskVector(path), scale))
    return out
